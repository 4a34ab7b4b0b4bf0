"""Timing, interleaved repetitions, peak memory and the table/JSON report shared by the benchmarks.

Every measured call is bracketed by CUDA events after a device synchronisation (perf_counter on
CPU). Variants are interleaved — for each repetition every variant runs once, in order — so slow
drifts (clocks, thermals, other tenants) hit all variants alike; medians are reported, and every
sample is kept in the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

OOM_ERRORS: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


@dataclass
class Variant:
    """One thing to time: `setup()` (untimed) -> `run(prepared)` (timed) -> `check(result)` (untimed).

    `check` raises to stop the benchmark (e.g. memory not written); `tokens` per call gives tok/s.
    """

    name: str
    run: Callable[[Any], Any]
    setup: Callable[[], Any] = lambda: None
    check: Callable[[Any], None] | None = None
    tokens: int | None = None


def timed_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, int | None, Any]:
    """Seconds and peak allocated bytes (None on CPU) of one call of `fn`, and its result."""
    if device.type != "cuda":
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, None, result
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    result = fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000.0, torch.cuda.max_memory_allocated(device), result


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_interleaved(variants: list[Variant], reps: int, warmup: int, device: torch.device) -> dict[str, dict]:
    """Warm up, then time `reps` interleaved rounds; per variant: median, samples, peak memory, tok/s.

    A variant that runs out of device memory is marked `status: "oom"` and skipped from then on.
    """
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    peaks: dict[str, list[int]] = {v.name: [] for v in variants}
    status = {v.name: "ok" for v in variants}
    for round_index in range(warmup + reps):
        for variant in variants:
            if status[variant.name] != "ok":
                continue
            try:
                prepared = variant.setup()
                seconds, peak, result = timed_call(lambda: variant.run(prepared), device)
                if variant.check is not None:
                    variant.check(result)
            except OOM_ERRORS:
                status[variant.name] = "oom"
            prepared = result = None
            if status[variant.name] != "ok":
                _free(device)  # outside the except block: its traceback no longer pins the tensors
                continue
            phase = "warm-up" if round_index < warmup else f"rep {round_index - warmup + 1}/{reps}"
            print(f"[bench] {variant.name} {phase}: {seconds * 1e3:.1f} ms", file=sys.stderr, flush=True)
            if round_index >= warmup:
                samples[variant.name].append(seconds)
                if peak is not None:
                    peaks[variant.name].append(peak)
    return {v.name: _summary(v, samples[v.name], peaks[v.name], status[v.name]) for v in variants}


def _summary(variant: Variant, samples: list[float], peaks: list[int], status: str) -> dict:
    median = statistics.median(samples) if samples else None
    return {
        "status": status,
        "median_s": median,
        "min_s": min(samples) if samples else None,
        "samples_s": samples,
        "tokens": variant.tokens,
        "tokens_per_s": variant.tokens / median if median and variant.tokens else None,
        "peak_mb": max(peaks) / 2**20 if peaks else None,
        "peak_mb_samples": [p / 2**20 for p in peaks] or None,
        "checked": variant.check is not None and bool(samples),
    }


def case(name: str, params: dict, stats: dict[str, dict], ratios: list[tuple[str, str]]) -> dict:
    """One benchmark case: its parameters, per-variant stats and median-time ratios a/b."""
    out: dict[str, float | None] = {}
    for a, b in ratios:
        ta, tb = stats.get(a, {}).get("median_s"), stats.get(b, {}).get("median_s")
        out[f"{a}/{b}"] = ta / tb if ta and tb else None
    return {"name": name, "params": params, "variants": stats, "time_ratios": out}


def _git(*command: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *command], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(device: torch.device, script: str, argv: list[str] | None) -> dict:
    """Device, library versions, date, git commit and the exact command line."""
    import transformers

    try:
        import peft

        peft_version: str | None = peft.__version__
    except ImportError:
        peft_version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return {
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft_version,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": list(sys.argv) if argv is None else [script, *argv],
    }


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def table(results: dict) -> str:
    """A plain-text table: one row per case and variant, time ratios appended per case."""
    header = f"{'case':<26} {'variant':<22} {'median ms':>11} {'min ms':>11} {'tok/s':>12} {'peak MB':>10}  status"
    lines = [header, "-" * len(header)]
    for item in results["cases"]:
        for name, stats in item["variants"].items():
            lines.append(
                f"{item['name']:<26} {name:<22} {_fmt(stats['median_s'], 1e3):>11} {_fmt(stats['min_s'], 1e3):>11} "
                f"{_fmt(stats['tokens_per_s'], digits=1):>12} {_fmt(stats['peak_mb'], digits=0):>10}  {stats['status']}"
            )
        ratios = ", ".join(f"{k} = {_fmt(v, digits=3)}" for k, v in item["time_ratios"].items())
        if ratios:
            lines.append(f"{'':<26} time ratios: {ratios}")
    return "\n".join(lines)


def report(results: dict, args: argparse.Namespace) -> dict:
    """Print the table and the JSON; write the JSON to `--json` if given."""
    from benchmarks.kernel_profile import profile_table

    text = json.dumps(results, indent=2, default=str)
    print(table(results))
    for name, profiled in results.get("profiles", {}).items():
        print(f"\nprofile of {name}\n{profile_table(profiled)}")
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return results


def arguments(args: argparse.Namespace) -> dict:
    """The parsed options as JSON-safe values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def all_checked(cases: list[dict], variant: str) -> bool | None:
    """True when every completed run of `variant` passed its check; None when none completed."""
    ran = [c["variants"][variant] for c in cases if c["variants"].get(variant, {}).get("status") == "ok"]
    return all(stats["checked"] for stats in ran) if ran else None
