"""The only entry point: `python src/run.py [task=...] [backbone=...] [memory=...] ...`.

The `task` config group picks what runs; every task takes the composed config.
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from evals.fingerprint import register_resolver

register_resolver()  # ${eval_fingerprint:}: task=eval's default run directory


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    task = instantiate(cfg.task)
    task(cfg)


if __name__ == "__main__":
    main()
