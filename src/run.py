"""The only entry point: `python src/run.py [task=...] [backbone=...] [memory=...] ...`.

The `task` config group picks what runs; every task takes the composed config. An error a person
can act on (`deltamem.errors.UserError`: a bad file, a missing adapter, a refused run) is printed
as one line and exits 1; DELTAMEM_TRACEBACK=1 or HYDRA_FULL_ERROR=1 shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from deltamem.errors import UserError, require_settings
from evals.fingerprint import register_resolver

register_resolver()  # ${eval_fingerprint:}: task=eval's default run directory
# paths.root_dir (and the data dir beside it) resolve against this project, not the current folder
os.environ.setdefault("DELTAMEM_ROOT", str(Path(__file__).resolve().parents[1]))


def wants_traceback() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("DELTAMEM_TRACEBACK", "HYDRA_FULL_ERROR"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        require_settings(cfg.task, "task")  # a preset's `???` named before anything is built
        task = instantiate(cfg.task)
        task(cfg)
    except (UserError, InstantiationException) as error:
        cause = error if isinstance(error, UserError) else error.__cause__  # instantiate wraps constructors' errors
        if wants_traceback() or not isinstance(cause, UserError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
