"""`task=quickstart` (the default run): train, then score held-out episodes under each condition.

Trains δ-mem on synthetic chats, then asks held-out chats' final questions under `no_context`
(the frozen backbone, question only), `full_context` (history in the prompt) and `memory_only`
(history written into the state, not in the prompt), and prints a small table. The held-out
episodes come from seeds disjoint from training; the answer never appears in the question.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from .episodes import EpisodeBuilder
from .generate import generate_answers
from .train import build_model, train
from .train_data.synthetic import score


def with_other_history(records: list[dict]) -> list[list[dict]]:
    """Each chat's question and answer after the *next* chat's history: the control that tells
    memory from guessing (a memory that carries the fact must fall to chance here)."""
    chats = []
    for i, record in enumerate(records):
        donor = records[(i + 1) % len(records)]["messages"]
        chats.append(donor[:-2] + record["messages"][-2:])
    return chats


def evaluate_heldout(cfg: DictConfig, loaded: Any, model: Any) -> dict[str, Any]:
    e = cfg.evaluation
    heldout = instantiate(cfg.train_data, split="heldout", num_episodes=e.episodes)
    records = [heldout[i] for i in range(len(heldout))]
    builder = EpisodeBuilder(
        loaded.tokenizer, cfg.training.max_write_length, cfg.training.max_length, dict(loaded.spec.chat_template_kwargs)
    )
    model.eval()
    results: dict[str, Any] = {}
    predictions = []
    runs = [(f"frozen {c}", c, False, False) for c in e.frozen_conditions]
    runs += [(f"δ-mem {c}", c, True, False) for c in e.conditions]
    if e.other_history_control:
        runs.append(("δ-mem memory_only, another chat's history (control)", "memory_only", True, True))
    for label, condition, use_memory, other_history in runs:
        start, hits = time.perf_counter(), []
        chats = with_other_history(records) if other_history else [r["messages"] for r in records]
        for first in range(0, len(records), e.batch_size):
            batch = records[first : first + e.batch_size]
            outputs = generate_answers(
                model,
                builder,
                chats[first : first + e.batch_size],
                condition,
                e.max_new_tokens,
                e.write_chunk_size,
                use_memory=use_memory,
            )
            for record, output in zip(batch, outputs):
                hits.append(score(output, record))
                predictions.append(
                    {
                        "id": record["id"],
                        "run": label,
                        "condition": condition,
                        "output": output,
                        "answer": record["answer"],
                        "score": hits[-1],
                    }
                )
        results[label] = {
            "condition": condition,
            "memory": use_memory,
            "accuracy": sum(hits) / len(hits),
            "n": len(hits),
            "seconds": time.perf_counter() - start,
        }
    return {"conditions": results, "predictions": predictions}


def format_table(results: dict[str, Any]) -> str:
    lines = ["| run | accuracy | n | seconds |", "|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {100 * r['accuracy']:.1f}% | {r['n']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def quickstart(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    loaded, model = build_model(cfg)
    before = evaluate_heldout(cfg, loaded, model) if cfg.evaluation.before_training else None
    trained = train(cfg, loaded, model)
    after = evaluate_heldout(cfg, loaded, model)
    summary = {
        "backbone": loaded.spec.name,
        "loaded_from": loaded.loaded_from,
        "memory": model.memory_config.to_dict(),
        "train": trained,
        "heldout_after_training": after["conditions"],
        "heldout_before_training": before["conditions"] if before else None,
        "total_seconds": time.perf_counter() - start,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (run_dir / "predictions.jsonl").open("w") as handle:
        for row in after["predictions"]:
            handle.write(json.dumps(row) + "\n")
    print(
        f"\nδ-mem quickstart — {loaded.spec.name} ({loaded.loaded_from}) + {model.memory_config.write.upper()}, "
        f"{trained['steps']} steps in {trained['seconds']:.0f}s; held-out synthetic episodes:"
    )
    print(format_table(after["conditions"]))
    print(f"results: {run_dir / 'results.json'}  (total {summary['total_seconds']:.0f}s)")
    return summary
