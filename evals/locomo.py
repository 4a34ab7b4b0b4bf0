"""LoCoMo (snap-research/locomo): long multi-session conversations with QA, scored by stemmed token F1.

One context per conversation (sample); its questions point at it. Protocols, each a prompt set in
`conf/benchmark/locomo.yaml` (`loader.prompts`; rendering in `evals/locomo_render.py`, scoring in
`evals/locomo_score.py`):
- "paper": the δ-mem release's evaluation exactly (PAPER_PROTOCOL.md §1), truncation included once a
  tokenizer is bound (`fit_to`; `task=eval` binds the backbone's).
- "paper_v0": the harness's earlier paraphrase, which `paper` named until 2026-12-03.
- "official": paper_v0's prompts and scorer.
Under every protocol category 5 (adversarial), when `include_adversarial`, is scored and reported per
category but kept out of `overall`. `score` gives fractions in [0, 1]; `aggregate` and
`PAPER_NUMBERS` are percentages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from evals import locomo_render as render
from evals.benchmark_base import BenchmarkBase
from evals.data_files import looks_like_a_path, missing_file, read_json
from evals.locomo_score import scorer
from evals.templates import protocol_prompts, protocols_of
from evals.text_metrics import weighted_means
from evals.types import BenchmarkDataError, Context, Generation, Item

# Qwen3-4B-Instruct-2507, F1 % (categories 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop).
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"overall": 40.79, "1": 38.39, "2": 32.89, "3": 10.77, "4": 48.05},
    "tsw": {"overall": 46.53},
    "ssw": {"overall": 47.05},
    "msw": {"overall": 49.12},
}

CATEGORY_NAMES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop", 5: "adversarial"}
OVERALL_EXCLUDED = ("5",)  # every protocol: adversarial questions are scored, and reported apart
OVERALL_POLICY = "question-weighted F1 over categories 1-4; category 5 (adversarial) is reported apart"
_SESSION_KEY = re.compile(r"^session_(\d+)$")


class LoCoMo(BenchmarkBase):
    """The LoCoMo QA benchmark (see the module docstring for protocols and conditions)."""

    name = "locomo"

    def __init__(
        self,
        source: str,
        categories: Sequence[int] = (1, 2, 3, 4),
        protocol: str = "paper",
        include_adversarial: bool = False,
        seed: int = 42,
        window_turns: int | None = None,
        window_chars: int = 8000,
        context_window: int | None = None,
        prompts: Mapping[str, Any] | None = None,
    ) -> None:
        known = tuple(prompts) if prompts is not None else protocols_of(self.name)
        if protocol not in known:
            raise ValueError(f"unknown LoCoMo protocol {protocol!r} (expected one of {known})")
        self.source = str(source)
        self.protocol = protocol
        self.templates = protocol_prompts(self.name, protocol, prompts, render.REQUIRED)
        self.protocol_source = str(self.templates["source"])
        self._postprocess, self._score = scorer(self.templates["scorer"])
        self.include_adversarial = bool(include_adversarial)
        self.categories = tuple(sorted({int(c) for c in categories} | ({5} if include_adversarial else set())))
        self.seed = int(seed)
        self.window_turns = window_turns
        self.window_chars = int(window_chars)
        self.context_window = None if context_window is None else int(context_window)
        self._count_tokens: Callable[[str], int] | None = None

    def fit_to(self, tokenizer: Any, window: int, template_kwargs: dict[str, Any] | None = None) -> None:
        """Count prompt tokens with `tokenizer` for the protocol's truncation (a no-op for protocols
        without one); `window` is the backbone's context length unless `context_window` is set. The
        chat-template arguments are not needed: the release counts the rendered user text."""
        if self.templates["answer_reserve_tokens"] is None or tokenizer is None:
            return
        cache: dict[str, int] = {}

        def count(text: str) -> int:
            if text not in cache:
                cache[text] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            return cache[text]

        self._count_tokens = count
        if self.context_window is None:
            self.context_window = int(window)

    # ----------------------------------------------------------------- loading
    def _records(self) -> list[dict[str, Any]]:
        path = Path(self.source)
        if path.exists():
            data = read_json(path)
        elif looks_like_a_path(self.source):
            raise missing_file(self.source, "LoCoMo")
        else:  # a hub id
            import datasets

            data = [dict(row) for row in datasets.load_dataset(self.source, split="train")]
        if not isinstance(data, list):
            raise BenchmarkDataError(f"{self.source}: expected a JSON list of samples, got {type(data).__name__}")
        return data

    def load(self) -> tuple[list[Context], list[Item]]:
        """Parse the samples into one context per conversation and the selected questions."""
        contexts: list[Context] = []
        items: list[Item] = []
        global_index = 0  # every question of the file, category 5 included
        for s_index, sample in enumerate(self._records()):
            where = f"{self.source}: sample {s_index}"
            if not isinstance(sample, dict) or "sample_id" not in sample:
                raise BenchmarkDataError(f"{where}: missing field 'sample_id'")
            sample_id = str(sample["sample_id"])
            where = f"{where} ({sample_id})"
            for key in ("conversation", "qa"):
                if not isinstance(sample.get(key), (dict, list)):
                    raise BenchmarkDataError(f"{where}: missing field {key!r}")
            context = self._context(sample_id, sample["conversation"], where)
            contexts.append(context)
            selected = 0  # questions of this conversation kept so far (the release's question_index)
            for qa_index, qa in enumerate(sample["qa"]):
                index = selected if self.templates["question_index"] == "conversation" else global_index
                item = self._item(qa, sample_id, qa_index, index, f"{where}, qa {qa_index}")
                global_index += 1
                if item is not None:
                    items.append(item)
                    selected += 1
        return contexts, items

    def _context(self, sample_id: str, conversation: dict[str, Any], where: str) -> Context:
        for key in ("speaker_a", "speaker_b"):
            if not conversation.get(key):
                raise BenchmarkDataError(f"{where}: conversation missing field {key!r}")
        numbers = sorted(
            int(m.group(1)) for k, v in conversation.items() if (m := _SESSION_KEY.match(k)) and v is not None
        )
        sessions = []
        for number in numbers:
            key = f"session_{number}"
            date = conversation.get(f"{key}_date_time")
            if not date:
                raise BenchmarkDataError(f"{where}: conversation missing field '{key}_date_time'")
            turns = []
            for t_index, turn in enumerate(conversation[key]):
                for field in ("speaker", "dia_id", "text"):
                    if not isinstance(turn, dict) or field not in turn:
                        raise BenchmarkDataError(f"{where}: {key} turn {t_index} missing field {field!r}")
                caption = turn.get("blip_caption")
                turns.append(
                    {"speaker": str(turn["speaker"]), "dia_id": str(turn["dia_id"]), "text": str(turn["text"])}
                    | ({"caption": str(caption)} if caption else {})
                )
            sessions.append({"number": number, "date": str(date), "turns": turns})
        meta = {"speaker_a": str(conversation["speaker_a"]), "speaker_b": str(conversation["speaker_b"])}
        context = Context(id=sample_id, meta={**meta, "sessions": sessions})
        context.messages = [{"role": "user", "content": render.memory_message(self.templates, s)} for s in sessions]
        context.sessions = [render.memory_structure(self.templates, s, k) for k, s in enumerate(sessions)]
        context.text = "\n\n".join(m["content"] for m in context.messages)
        return context

    def _item(self, qa: Any, sample_id: str, qa_index: int, question_index: int, where: str) -> Item | None:
        if not isinstance(qa, dict):
            raise BenchmarkDataError(f"{where}: expected an object, got {type(qa).__name__}")
        for field in ("question", "category", "evidence"):
            if field not in qa or qa[field] is None:
                raise BenchmarkDataError(f"{where}: missing field {field!r}")
        category = int(qa["category"])
        if category not in CATEGORY_NAMES:
            raise BenchmarkDataError(f"{where}: field 'category' is {category}, expected 1-5")
        if category not in self.categories:
            return None
        meta: dict[str, Any] = {
            "evidence": list(qa["evidence"]),
            "question_index": question_index,
            "qa_index": qa_index,
            "category_name": CATEGORY_NAMES[category],
        }
        if category == 5:
            if qa.get("adversarial_answer") is None:
                raise BenchmarkDataError(f"{where}: missing field 'adversarial_answer'")
            meta["adversarial_answer"] = str(qa["adversarial_answer"])
            first = render.not_mentioned_first(self.templates, self.seed, sample_id, question_index)
            meta["not_mentioned_first"] = first
            answers = [str(self.templates["not_mentioned"])]
        else:
            if qa.get("answer") is None:
                raise BenchmarkDataError(f"{where}: missing field 'answer'")
            answers = [str(qa["answer"])]
        item_id = f"{sample_id}:q{qa_index}"
        return Item(item_id, str(qa["question"]), answers, sample_id, str(category), meta)

    # ----------------------------------------------------------------- prompting
    def history_text(self, context: Context) -> str:
        """The conversation as plain text, sessions oldest first."""
        return context.text

    def question_text(self, item: Item) -> str:
        """The question with the category-2 date request or the category-5 choices appended."""
        return render.question_text(
            self.templates,
            item.question,
            str(item.category),
            bool(item.meta.get("not_mentioned_first", True)),
            str(item.meta.get("adversarial_answer", "")),
        )

    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """System + one user turn; the history appears under full_context and recent_window only."""
        sessions = self.shown_history(condition, item, context)
        question = self.question_text(item)
        if sessions is None:
            return render.messages(self.templates, render.render_user(self.templates, ("", ""), None, question))
        speakers = (context.meta["speaker_a"], context.meta["speaker_b"])
        return render.messages(self.templates, render.render_user(self.templates, speakers, sessions, question))

    def full_history(self, item: Item, context: Context) -> list[dict[str, Any]]:
        """Every session, cut by the protocol's truncation once a tokenizer is bound (`fit_to`)."""
        sessions = context.meta["sessions"]
        if self._count_tokens is None or self.context_window is None:
            return sessions
        speakers = (context.meta["speaker_a"], context.meta["speaker_b"])
        budget = self.context_window - int(self.templates["answer_reserve_tokens"])
        question = self.question_text(item)
        return render.truncate_sessions(self.templates, speakers, sessions, question, self._count_tokens, budget)

    def recent_history(self, item: Item, context: Context) -> list[dict[str, Any]]:
        """The latest turns: `window_turns` of them, else as many whole turns as fit `window_chars`."""
        sessions = context.meta["sessions"]
        flat = [(s, t) for s in sessions for t in s["turns"]]
        if self.window_turns is not None:
            keep = flat[len(flat) - min(len(flat), int(self.window_turns)) :]
        else:
            keep, used = [], 0
            joint = len(self.templates["turn_join"])
            for session, turn in reversed(flat):
                used += len(render.render_turn(self.templates, turn)) + joint
                if used > self.window_chars:
                    break
                keep.insert(0, (session, turn))
        out: list[dict[str, Any]] = []
        for session, turn in keep:
            if not out or out[-1]["number"] != session["number"]:
                out.append({"number": session["number"], "date": session["date"], "turns": []})
            out[-1]["turns"].append(turn)
        return out

    def generation(self, item: Item) -> Generation:
        """The protocol's `decoding` (config: sampling T 0.4, top-p 0.9, top-k 10, 50 new tokens), with
        seed = `seed` + question index."""
        return Generation(**self.templates["decoding"], seed=self.seed + int(item.meta["question_index"]))

    # ----------------------------------------------------------------- scoring
    def score(self, output: str, item: Item) -> dict[str, float]:
        """Post-process the output and score it by category, as the protocol's scorer does."""
        gold = item.answers[0] if item.answers else ""
        return {"f1": self._score(self._postprocess(output), gold, item.category)}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Question-weighted F1 (%) overall and per category. Category 5 (adversarial) is kept out of
        `overall` under every protocol and reported apart, as `overall_policy` states."""
        means = weighted_means(rows, ("f1",), exclude_from_overall=OVERALL_EXCLUDED)
        return {"overall": means["f1"], **means, "protocol": self.protocol, "protocol_source": self.protocol_source,
                "overall_policy": OVERALL_POLICY, "category_names": {str(k): v for k, v in CATEGORY_NAMES.items()}}
