"""`task=quickstart` (the default run, `python src/run.py`): train δ-mem, then score it with the same
evaluation stack as every benchmark.

1. The frozen backbone answers the held-out synthetic chats (`benchmark=synthetic`) under
   `frozen_conditions`, before any memory is attached: `<run>/eval_frozen/`.
2. δ-mem is attached (seeded) and trained on the training split (`deltamem.train.train`): `<run>/adapter`.
3. The trained memory answers the same chats under `conditions` (by default `full_context`,
   `memory_only` and the wrong-history control): `<run>/eval_deltamem/`.

Both evaluations are `EvalRunner` runs with the usual `results.json`, `predictions.jsonl` and
`scores.jsonl`. The table printed at the end is `task=table` over the two folders. A rerun in the
same folder skips the finished training and continues the evaluations; a rerun with other
settings is refused (`fingerprint.json`). `<run>/quickstart.json` sums up the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deltamem.adapters import adapter_sha256
from deltamem.tasks import say
from deltamem.train import attach_seeded, load_training_backbone, train

from .chat_method import FrozenBackbone
from .conditions import FULL_CONTEXT, MEMORY_ONLY, NO_CONTEXT, WRONG_HISTORY
from .deltamem_method import DeltaMemMethod
from .fingerprint import check_or_record
from .runner import EvalRunner, provenance
from .tables import build_tables


def _evaluate(cfg: DictConfig, method: Any, conditions: Sequence[str], run_dir: Path, identity: str) -> dict:
    fields = {"benchmark": OmegaConf.to_container(cfg.benchmark.loader, resolve=True),
              "backbone": OmegaConf.to_container(cfg.backbone, resolve=True), "seed": cfg.seed, "method": identity}
    fingerprint = check_or_record(run_dir, json.loads(json.dumps(fields, default=str)))
    benchmark = instantiate(cfg.benchmark.loader)
    info = {"backbone": {"name": method.loaded.spec.name, "loaded_from": method.loaded.loaded_from},
            "fingerprint": fingerprint, **provenance()}
    return EvalRunner(benchmark, method, list(conditions), run_dir, progress=False, run_info=info).run()


def quickstart(
    cfg: DictConfig,
    frozen_conditions: Sequence[str] = (NO_CONTEXT.name, FULL_CONTEXT.name),
    conditions: Sequence[str] = (FULL_CONTEXT.name, MEMORY_ONLY.name, WRONG_HISTORY.name),
    batch_size: int = 16,
) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    loaded = load_training_backbone(cfg)
    frozen_dir, memory_dir = run_dir / "eval_frozen", run_dir / "eval_deltamem"
    _evaluate(cfg, FrozenBackbone(loaded, batch_size=batch_size), frozen_conditions, frozen_dir, "vanilla")
    model = attach_seeded(cfg, loaded)
    trained = train(cfg, loaded, model)
    model.eval()
    method = DeltaMemMethod(loaded, trained=model, batch_size=batch_size)
    method.adapter = trained["adapter"]  # what results.json fingerprints as the memory (its sha256)
    _evaluate(cfg, method, conditions, memory_dir, f"deltamem:{adapter_sha256(trained['adapter'])}")
    markdown, _ = build_tables([frozen_dir, memory_dir])
    summary = {
        "backbone": loaded.spec.name,
        "loaded_from": loaded.loaded_from,
        "memory": model.memory_config.to_dict(),
        "train": trained,
        "evaluations": [str(frozen_dir), str(memory_dir)],
        "total_seconds": time.perf_counter() - start,
    }
    (run_dir / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n")
    seconds = trained.get("seconds_total", trained["seconds"])
    say(
        f"\nδ-mem quickstart: {loaded.spec.name} ({loaded.loaded_from}) + {model.memory_config.write.upper()}, "
        f"{trained['steps']} steps in {seconds:.0f}s; held-out synthetic chats:\n\n{markdown}"
    )
    say(f"runs: {frozen_dir}, {memory_dir}  (total {summary['total_seconds']:.0f}s)")
    return summary


__all__ = ["quickstart"]
