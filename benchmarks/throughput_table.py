"""Markdown table of training throughput runs (`throughput.json` files), with ratios to the first.

    python benchmarks/throughput_table.py RUN_A/throughput.json RUN_B/throughput.json ...

Runs are listed as given, sorted by world size; ratios are against the first single-device run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        report = json.loads(path.read_text())
        report["name"] = path.parent.name
        rows.append(report)
    return sorted(rows, key=lambda r: r["world_size"])


def table(rows: list[dict]) -> str:
    if not rows:
        raise ValueError("no throughput.json given")
    base = next((r for r in rows if r["world_size"] == 1), rows[0])
    lines = [
        "| run | strategy | GPUs | accumulation | optimiser step (s, median) | tokens/s | vs 1 GPU | "
        "peak memory per GPU (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peaks = ", ".join(f"{p:.1f}" for p in r["peak_memory_gib_per_device"])
        lines.append(
            f"| {r['name']} | {r['strategy']} | {r['world_size']} | {r['accumulate_grad_batches']} | "
            f"{r['step_seconds_median']:.2f} | {r['tokens_per_second']:,.0f} | "
            f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}× | {peaks} |"
        )
    device = base["device_names"][0]
    lines.append(f"\nDevice: {device}; timed optimiser steps per run: {[r['optimizer_steps_timed'] for r in rows]}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    print(table(load(parser.parse_args().reports)))


if __name__ == "__main__":
    main()
