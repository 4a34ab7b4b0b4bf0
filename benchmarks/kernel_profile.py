"""Where the time goes: one call of each variant under `torch.profiler`, device time per kernel.

On CPU (the smoke test) the same tables hold operators' self CPU time instead of kernel time.

Used by the benchmarks' `--profile` option to explain a ratio with a profile: for each variant the
total device (CUDA) time, the launch count, and its top kernels; for each compared pair, the kernels
whose time grew the most (what the slower variant adds or makes slower).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import Variant


def kernel_times(prof: profile, device: torch.device) -> tuple[Counter, Counter]:
    """(calls, µs) per kernel name: device-side kernels on a GPU, operators' self CPU time on CPU."""
    counts: Counter = Counter()
    micros: Counter = Counter()
    for event in prof.key_averages():
        on_device = event.device_type != torch.autograd.DeviceType.CPU
        if device.type == "cuda" and on_device and event.device_time_total > 0:
            counts[event.key] += event.count
            micros[event.key] += event.device_time_total
        elif device.type != "cuda" and not on_device and event.self_cpu_time_total > 0:
            counts[event.key] += event.count
            micros[event.key] += event.self_cpu_time_total
    return counts, micros


def profile_variant(variant: Variant, device: torch.device) -> tuple[Counter, Counter]:
    """Run `variant` once (setup, run, check) under the profiler; calls and µs per kernel."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    prepared = variant.setup()
    with profile(activities=activities) as prof:
        result = variant.run(prepared)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if variant.check is not None:
        variant.check(result)
    return kernel_times(prof, device)


def kernel_profile(
    variants: list[Variant], device: torch.device, pairs: list[tuple[str, str]], top: int = 12
) -> dict[str, dict]:
    """Per variant: device ms, launches, top kernels; per pair a/b: the kernels a spends more time in."""
    kernels = {v.name: profile_variant(v, device) for v in variants}
    out: dict[str, dict] = {}
    for name, (counts, micros) in kernels.items():
        out[name] = {
            "device_ms": sum(micros.values()) / 1e3,
            "launches": sum(counts.values()),
            "top": [[key[:120], counts[key], micros[key] / 1e3] for key, _ in micros.most_common(top)],
        }
    for a, b in pairs:
        if a not in kernels or b not in kernels:
            continue
        grown = kernels[a][1] - kernels[b][1]  # Counter subtraction keeps the kernels that grew
        out[f"{a}-{b}"] = {
            "device_ms": out[a]["device_ms"] - out[b]["device_ms"],
            "launches": out[a]["launches"] - out[b]["launches"],
            "top": [
                [key[:120], kernels[a][0][key] - kernels[b][0][key], us / 1e3] for key, us in grown.most_common(top)
            ],
        }
    return out


def profile_table(profiled: dict[str, dict]) -> str:
    """Plain text: a block per variant (and per compared pair) with its top kernels."""
    lines = []
    for name, item in profiled.items():
        lines.append(f"== {name}: device {item['device_ms']:.2f} ms, {item['launches']} launches")
        for key, count, ms in item["top"]:
            lines.append(f"   {ms:9.3f} ms  {count:6d}×  {key}")
    return "\n".join(lines)
