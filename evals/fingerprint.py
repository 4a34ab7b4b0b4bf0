"""What an evaluation run *is*, so that two different runs never share a directory.

The fingerprint is the part of the composed config that decides the predictions: the benchmark
(loader, protocol, prompts, decoding), the method (with its memory config), the backbone, the
seed, and the adapter's sha256. Execution details that do not change what is asked or how it is
decoded (batch sizes, prefill chunking, the device, the conditions chosen, `limit`) are left out, so a
rerun with more conditions, a larger limit or another batch size continues the same run.

Paths are made portable: a value naming an existing file becomes `file:<name>:<bytes>`, one naming a
directory `dir:<name>`, so a run moved between machines (data under another root) still matches.

`check_or_record(run_dir, fields)` writes `fingerprint.json` on a run's first call and, on every
later call, refuses a different fingerprint with one line naming the first field that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from deltamem.adapters import adapter_sha256
from deltamem.errors import UserError

FILE = "fingerprint.json"
# keys (by their last path component) that change how fast a run goes, not what it predicts
EXECUTION_KEYS = frozenset({"batch_size", "prefill_chunk", "device", "conditions", "progress", "num_workers"})


class RunMismatchError(UserError, RuntimeError):
    """The run directory holds a run with another fingerprint."""


def _portable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _portable(v) for k, v in sorted(value.items()) if k not in EXECUTION_KEYS}
    if isinstance(value, (list, tuple)):
        return [_portable(v) for v in value]
    if isinstance(value, str) and ("/" in value or value.startswith(".")) and os.path.exists(value):
        path = Path(value)
        return f"file:{path.name}:{path.stat().st_size}" if path.is_file() else f"dir:{path.name}"
    return value


def eval_fields(cfg: DictConfig) -> dict[str, Any]:
    """The fingerprinted fields of an evaluation config (resolved, execution keys dropped)."""

    def section(key: str) -> Any:
        node = OmegaConf.select(cfg, key)
        return (
            None if node is None else OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        )

    return _portable(
        {
            "benchmark": section("benchmark"),
            "method": section("method"),
            "backbone": section("backbone"),
            "seed": section("seed"),
            "adapter_sha256": adapter_sha256(section("adapter")),
        }
    )


def digest(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first differing value, with both values (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if a != b:
        return f"{path or '<root>'}: {json.dumps(a, default=str)[:80]} → {json.dumps(b, default=str)[:80]}"
    return None


def check_or_record(run_dir: Path, fields: Mapping[str, Any]) -> str:
    """Record the fingerprint of a new run, or refuse a directory that holds another one."""
    run_dir = Path(run_dir)
    path = run_dir / FILE
    mine = {"digest": digest(fields), "fields": fields}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("digest") != mine["digest"]:
            where = first_difference(stored.get("fields"), json.loads(json.dumps(fields, default=str)))
            raise RunMismatchError(
                f"{run_dir} holds a run with another configuration (fingerprint {stored.get('digest')} ≠ "
                f"{mine['digest']}; {where}): rerun with the same settings to continue, or use a new directory"
            )
        return mine["digest"]
    if any(run_dir.glob("predictions*.jsonl")):
        print(f"[evals] {run_dir} has predictions but no {FILE} (an older run): recording this one's", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(mine, indent=1, sort_keys=True, default=str) + "\n")
    temporary.replace(path)
    return mine["digest"]


def register_resolver() -> None:
    """`${eval_fingerprint:}` in configs: the digest of the composed config it appears in; and
    `${join:${list}}`, a list's items joined (folder names of sweep jobs, e.g. targets=qo); and
    `${under:${runs},sub}`, the folder `sub` of each run (an arm's seeds in conf/task/compare_*); and
    `${arm_series:${frozen},${study},${arms},${subs}}`, a figure's series: the frozen run, then each
    arm of a study folder, each with its `subs` folders (conf/task/plot_replication_arms.yaml)."""
    if not OmegaConf.has_resolver("eval_fingerprint"):
        OmegaConf.register_new_resolver("eval_fingerprint", lambda *, _root_: digest(eval_fields(_root_)))
    if not OmegaConf.has_resolver("join"):
        OmegaConf.register_new_resolver("join", lambda items, sep="": sep.join(str(i) for i in items))
    if not OmegaConf.has_resolver("under"):  # ${under:${runs},eval_hotpotqa}: that folder in each run
        OmegaConf.register_new_resolver("under", lambda runs, sub: [f"{run}/{sub}" for run in runs])
    if not OmegaConf.has_resolver("arm_series"):
        OmegaConf.register_new_resolver("arm_series", arm_series)


def arm_series(frozen: str, study: str, arms: list[str], subs: list[str]) -> list[dict]:
    """[{label: frozen, runs: [frozen/sub...]}, {label: δ-mem ARM, runs: [study/ARM/sub...]}, ...]."""
    if not arms:
        raise ValueError("arm_series: name at least one arm (task.runs.arms=[...])")
    series = [{"label": "frozen", "runs": [f"{frozen}/{sub}" for sub in subs]}]
    return series + [{"label": f"δ-mem {arm}", "runs": [f"{study}/{arm}/{sub}" for sub in subs]} for arm in arms]


__all__ = [
    "RunMismatchError",
    "adapter_sha256",
    "check_or_record",
    "digest",
    "eval_fields",
    "first_difference",
    "register_resolver",
]
