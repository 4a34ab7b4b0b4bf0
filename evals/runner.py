"""The evaluation runner: one benchmark × one method × a list of conditions → a run directory.

For each condition and each context, the runner resets the method, memorises the history where
the condition asks for it (`evals.conditions`), then asks the context's questions in calls of
`questions_per_call` (the method batches and shares the prompt prefix inside a call and across
the context's calls). Every answered question is appended to `predictions.jsonl` at once, so a
killed run loses at most one call; a rerun skips what is there. `results.json` is rebuilt from
`predictions.jsonl` alone at the end, so a resumed run and an uninterrupted one write the same
scores. Several processes (`torchrun --nproc_per_node N src/run.py task=eval ...`, or RANK /
WORLD_SIZE set by hand) split the contexts; rank 0 merges the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from deltamem.errors import UserError
from evals.conditions import ALL_CONDITIONS, CONDITIONS, WRONG_HISTORY
from evals.methods import History, MemoryMethod, Query, supports
from evals.predictions import PredictionStore, mark_done, merge_shards, read_rows, shard_file
from evals.score_vectors import write_score_vectors
from evals.types import Context, Item

SCORE_KEYS_SKIPPED = {"id", "condition", "context_id", "category", "output"}


@dataclass
class Unit:
    """Work between two resets of the method: the histories to memorise (as (whose memory, whose
    history) context pairs: they differ only under the wrong-history control), then the calls."""

    memorize: list[tuple[Context, Context]]
    calls: list[list[tuple[Item, Context | None]]]


@dataclass
class Shard:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "Shard":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


class NoCommonConditionError(UserError, ValueError):
    """The method supports none of the conditions asked for."""


class EvalRunner:
    """Runs `method` on `benchmark` under `conditions`, writing into `run_dir`."""

    def __init__(
        self,
        benchmark: Any,
        method: MemoryMethod,
        conditions: Sequence[str],
        run_dir: str | Path,
        limit: int | None = None,
        questions_per_call: int = 32,
        shard: Shard | None = None,
        progress: bool = True,
        run_info: dict[str, Any] | None = None,
        data: tuple[list[Context], list[Item]] | None = None,
    ):
        """`data`: the benchmark's (contexts, items) when the caller loaded them already (task=eval
        reads and checks the data before it loads a model, so a bad file fails in seconds)."""
        unknown = [c for c in conditions if c not in ALL_CONDITIONS]
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; expected some of {ALL_CONDITIONS}")
        if not conditions:
            raise ValueError("no conditions to run")
        self.benchmark = benchmark
        self.method = method
        self.conditions = list(conditions)
        self.run_dir = Path(run_dir)
        self.limit = limit
        self.questions_per_call = int(questions_per_call)
        self.shard = shard or Shard()
        self.progress = progress
        self.run_info = dict(run_info or {})
        self.data = data

    # ----------------------------------------------------------------- planning
    def load(self) -> tuple[dict[str, Context], list[Item]]:
        contexts, items = self.data if self.data is not None else self.benchmark.load()
        if self.limit is not None:
            items = items[: int(self.limit)]
        return {c.id: c for c in contexts}, items

    def groups(self, items: Sequence[Item]) -> list[tuple[str | None, list[Item]]]:
        """Items grouped by context in first-appearance order; context-free items form one group."""
        order: dict[str | None, list[Item]] = {}
        for item in items:
            order.setdefault(item.context_id, []).append(item)
        return list(order.items())

    def my_groups(self, items: Sequence[Item]) -> list[tuple[str | None, list[Item]]]:
        """This rank's share: whole contexts round-robin; context-free items round-robin one by one."""
        mine = []
        for index, (context_id, group) in enumerate(self.groups(items)):
            if context_id is None:
                part = group[self.shard.rank :: self.shard.world_size]
                if part:
                    mine.append((None, part))
            elif index % self.shard.world_size == self.shard.rank:
                mine.append((context_id, group))
        return mine

    # ----------------------------------------------------------------- running
    def run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        contexts, items = self.load()
        store = PredictionStore(shard_file(self.run_dir, self.shard.rank, self.shard.world_size))
        started = time.perf_counter()
        runnable = [c for c in self.conditions if supports(self.method, c)]
        if not runnable:
            raise NoCommonConditionError(
                f"method {self.method.name} runs none of the requested conditions {self.conditions} on "
                f"{self.benchmark.name} (it runs {sorted(self.method.conditions)}): nothing to evaluate"
            )
        skipped = [c for c in self.conditions if c not in runnable]
        if skipped:
            print(f"[evals] {self.method.name} does not run {skipped}; running {runnable}", file=sys.stderr)
        donors = self.donors(items) if any(CONDITIONS[c].memorizes_other for c in runnable) else {}
        mine = self.my_groups(items)
        todo = sum(1 for c in runnable for _, g in mine for i in g if (i.id, c) not in store.done)
        bar = tqdm(
            total=todo, desc=f"{self.benchmark.name}/{self.method.name}", disable=not self.progress, mininterval=2.0
        )
        running: dict[str, list[float]] = {}
        for condition in runnable:
            for unit in self._units(condition, mine, contexts, store.done, donors):
                memorize_s = self._prepare(condition, unit.memorize)
                history_of = {key.id: source.id for key, source in unit.memorize}
                for call in unit.calls:
                    rows = self._answer(condition, call, memorize_s, history_of)
                    store.append(rows)
                    bar.update(len(rows))
                    main = next((k for k in rows[0]["scores"]), None)
                    if main is not None:
                        running.setdefault(condition, []).extend(r["scores"][main] for r in rows)
                        bar.set_postfix({c: f"{100 * sum(v) / len(v):.1f}" for c, v in running.items()})
        bar.close()
        self.method.reset()
        elapsed = time.perf_counter() - started
        if self.shard.world_size > 1:
            mark_done(self.run_dir, self.shard.rank)
            if self.shard.rank != 0:
                return {}
            rows = merge_shards(self.run_dir, self.shard.world_size, self.expected_order(items, runnable))
        else:
            rows = read_rows(store.path)
        results = self.results(rows, runnable, elapsed)
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        write_score_vectors(self.run_dir, rows)  # ids and scores only, beside results.json: Δs can be recomputed
        return results

    def expected_order(self, items: Sequence[Item], conditions: Sequence[str]) -> list[tuple[str, str]]:
        """(id, condition) in the order an unsharded run appends them."""
        return [(i.id, c) for c in conditions for _, group in self.groups(items) for i in group]

    def donors(self, items: Sequence[Item]) -> dict[str, str]:
        """The wrong-history control's pairing: each context gets the history of the next context
        (in the benchmark's order, among contexts with items; the last gets the first's). The pairing
        is fixed by the items alone, so every shard and every rerun uses the same one."""
        ids = [context_id for context_id, _ in self.groups(items) if context_id is not None]
        if len(ids) < 2:
            raise ValueError(
                f"condition {WRONG_HISTORY.name} needs at least two contexts with questions, got {len(ids)}"
            )
        return {ids[k]: ids[(k + 1) % len(ids)] for k in range(len(ids))}

    def _units(
        self,
        condition: str,
        groups: Sequence[tuple[str | None, list[Item]]],
        contexts: dict[str, Context],
        done: set[tuple[str, str]],
        donors: dict[str, str] | None = None,
    ) -> list[Unit]:
        """Work for one condition, as units of (histories to memorise, calls of (item, its context)).

        A method that memorises one history at a time gets one unit per context. Otherwise contexts
        with fewer questions than a call holds are packed into shared calls (HotpotQA: one question
        each): a method with `memorize_many` memorises all of a call's histories at once, and one
        that memorises nothing needs none. A context with more questions than a call holds keeps its
        calls to itself (its long prefix stays shared)."""
        memorizing = CONDITIONS[condition].memorizes_history and getattr(self.method, "memorizes", True)
        packs = not memorizing or hasattr(self.method, "memorize_many")
        units: list[Unit] = []
        packed: list[tuple[Item, Context | None]] = []
        size = self.questions_per_call

        def memorised(pairs: Sequence[tuple[Item, Context | None]]) -> list[tuple[Context, Context]]:
            if not memorizing:
                return []
            out, seen = [], set()
            for _, context in pairs:
                if context is not None and context.id not in seen:
                    seen.add(context.id)
                    source = contexts[donors[context.id]] if CONDITIONS[condition].memorizes_other else context
                    out.append((context, source))
            return out

        def flush() -> None:
            if packed:
                units.append(Unit(memorised(packed), [list(packed)]))
                packed.clear()

        for context_id, group in groups:
            context = contexts.get(context_id) if context_id is not None else None
            if context_id is not None and context is None:
                raise KeyError(f"item {group[0].id} points at context {context_id!r}, which the benchmark lacks")
            pending = [(i, context) for i in group if (i.id, condition) not in done]
            if not pending:
                continue
            if not packs or len(pending) >= size:
                flush()  # keep the unsharded order: what was packed before goes first
                calls = [pending[k : k + size] for k in range(0, len(pending), size)]
                units.append(Unit(memorised(pending[:1]), calls))
            else:
                if len(packed) + len(pending) > size:
                    flush()
                packed.extend(pending)
        flush()
        return units

    def _prepare(self, condition: str, pairs: Sequence[tuple[Context, Context]]) -> float:
        """Reset the method and memorise the unit's histories (one, or several at once)."""
        self.method.reset()
        if not CONDITIONS[condition].memorizes_history or not pairs:
            return 0.0
        start = time.perf_counter()
        histories = [
            History(key.id, self.benchmark.written_history(condition, source), source.sessions, source.passages)
            for key, source in pairs
        ]
        if len(histories) == 1:
            self.method.memorize(histories[0])
        else:
            self.method.memorize_many(histories)
        return (time.perf_counter() - start) / len(histories)

    def _answer(
        self,
        condition: str,
        call: Sequence[tuple[Item, Context | None]],
        memorize_s: float,
        history_of: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        items = [item for item, _ in call]
        queries = []
        shown = CONDITIONS[condition].prompt_name
        for item, context in call:
            messages = self.benchmark.prompt(item, context, shown)
            question = getattr(self.benchmark, "question_text", lambda i: i.question)(item)
            queries.append(Query(item.id, messages, question, self.benchmark.generation(item), item.context_id))
        start = time.perf_counter()
        answers = self.method.answer(queries)
        seconds = (time.perf_counter() - start) / max(1, len(items))
        if len(answers) != len(items):
            raise RuntimeError(f"method {self.method.name} returned {len(answers)} answers for {len(items)} questions")
        rows = []
        for item, query, answer in zip(items, queries, answers):
            rows.append(
                {
                    "id": item.id,
                    "condition": condition,
                    "context_id": item.context_id,
                    "category": item.category,
                    "output": answer.text,
                    "scores": self.benchmark.score(answer.text, item),
                    "prompt_hash": hashlib.sha1(json.dumps(query.messages).encode()).hexdigest()[:16],
                    "prompt_tokens": answer.prompt_tokens,
                    "output_tokens": answer.output_tokens,
                    "truncated_tokens": answer.truncated_tokens,
                    "answer_seconds": round(seconds, 4),
                    "memorize_seconds": round(memorize_s, 4),
                    **({"history_from": history_of[item.context_id]} if CONDITIONS[condition].memorizes_other else {}),
                    "seed": query.generation.seed,
                    **({"extra": answer.extra} if answer.extra else {}),
                    **({"item_meta": _jsonable(item.meta)} if item.meta else {}),
                }
            )
        return rows

    # ----------------------------------------------------------------- results
    def results(self, rows: Sequence[dict[str, Any]], conditions: Sequence[str], elapsed: float) -> dict[str, Any]:
        per_condition, timing = summarize(self.benchmark, rows, conditions)
        timing = {"wall_seconds_this_process": round(elapsed, 2), **timing}
        decoder = getattr(self.method, "decoder", None)
        if decoder is not None:  # which token loop decoded each batch (deltamem/decode_loops.py)
            timing["decode_loop"] = decoder.decode_loop
            timing["decode_loops_this_process"] = dict(decoder.loops_used)
        skipped = [c for c in self.conditions if c not in conditions]
        return {
            "benchmark": self.benchmark.name,
            "protocol": getattr(self.benchmark, "protocol", None),
            **({"protocol_source": source} if (source := getattr(self.benchmark, "protocol_source", None)) else {}),
            "method": self.method.name,
            "method_cost": self.method.cost(),
            "conditions": per_condition,
            "skipped_conditions": skipped,
            "paper_numbers": paper_numbers(self.benchmark),
            **({"data": note} if (note := getattr(self.benchmark, "data_note", None)) else {}),
            **self.run_info,
            "timing": timing,
        }


def summarize(benchmark: Any, rows: Sequence[dict[str, Any]], conditions: Sequence[str]) -> tuple[dict, dict]:
    """(per-condition aggregates with their cost, per-condition timing) of prediction rows."""
    per_condition: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    for condition in conditions:
        chosen = [r for r in rows if r["condition"] == condition]
        flat = [{"category": r["category"], **_breakdown(r), **r["scores"]} for r in chosen]
        if not flat:
            continue
        summary = benchmark.aggregate(flat)
        summary["cost"] = {
            "prompt_tokens_mean": _mean(r["prompt_tokens"] for r in chosen),
            "output_tokens_mean": _mean(r["output_tokens"] for r in chosen),
            "truncated_questions": sum(1 for r in chosen if r["truncated_tokens"] > 0),
        }
        per_condition[condition] = summary
        contexts = {r["context_id"]: r["memorize_seconds"] for r in chosen}
        timing[condition] = {
            "answer_seconds_total": round(sum(r["answer_seconds"] for r in chosen), 2),
            "memorize_seconds_total": round(sum(contexts.values()), 2),
        }
    return per_condition, timing


# item_meta keys a benchmark's aggregate may group by (MemoryAgentBench: per source; HotpotQA: per level)
BREAKDOWN_KEYS = ("dataset", "level")


def _breakdown(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("item_meta") or {}
    return {k: meta[k] for k in BREAKDOWN_KEYS if meta.get(k) is not None}


def paper_numbers(benchmark: Any) -> dict[str, Any]:
    return dict(getattr(import_module(type(benchmark).__module__), "PAPER_NUMBERS", {}))


def _mean(values: Any) -> float:
    values = list(values)
    return round(sum(values) / len(values), 2) if values else 0.0


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(meta, default=str))


def provenance(cfg: Any = None) -> dict[str, Any]:
    """Git SHA and package versions for results files."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    versions = {}
    for package in ("torch", "transformers", "deltamem-harness", "lm-eval", "peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {"git_sha": sha or None, "python": platform.python_version(), "versions": versions}
