"""LoCoMo prompts from a protocol's templates (`conf/benchmark/locomo.yaml`, `loader.prompts`).

One renderer serves every protocol; the templates decide the strings and their junctions, and a few
named rules decide the rest (the category-5 option order, the truncation). Sessions are dicts
`{"number", "date", "turns": [{"speaker", "dia_id", "text", "caption"?}]}`, oldest first; the prompt
shows them newest first under every protocol (the official LoCoMo order, kept by the release).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Mapping, Sequence

from evals.templates import fill
from evals.types import Session as HistorySession
from evals.types import Turn

Templates = Mapping[str, Any]
Session = dict[str, Any]
REQUIRED = (
    "source", "system", "start", "turn", "caption", "turn_join", "session", "session_join", "user",
    "user_no_context", "qa", "temporal_suffix", "adversarial_suffix", "not_mentioned", "option_order",
    "question_index", "truncation_header", "answer_reserve_tokens", "scorer", "memory_turn", "memory_session",
    "memory_turn_join", "decoding",
)  # fmt: skip
OPTION_ORDERS = ("sha256_parity", "random_v0")
QUESTION_INDICES = ("conversation", "global")


def render_turn(t: Templates, turn: Mapping[str, str], key: str = "turn") -> str:
    """One turn through `t[key]`, its caption (if any) through `t["caption"]`."""
    caption = fill(t["caption"], caption=turn["caption"]) if turn.get("caption") else ""
    return fill(t[key], speaker=turn["speaker"], text=turn["text"], caption=caption)


def render_session(t: Templates, session: Session) -> str:
    """A session block of the prompt: its header and turns, chronological."""
    turns = t["turn_join"].join(render_turn(t, turn) for turn in session["turns"])
    return fill(t["session"], date=session["date"], turns=turns)


def render_context(t: Templates, sessions: Sequence[Session]) -> str:
    """The conversation as the prompt shows it: sessions newest first."""
    return t["session_join"].join(render_session(t, s) for s in reversed(sessions))


def memory_message(t: Templates, session: Session) -> str:
    """A session as one memorised history message (`memory_*` templates)."""
    turns = t["memory_turn_join"].join(render_turn(t, turn, "memory_turn") for turn in session["turns"])
    return fill(t["memory_session"], date=session["date"], turns=turns)


def memory_structure(t: Templates, session: Session, message: int) -> HistorySession:
    """The structure of `memory_message(t, session)`, history message `message`: its date and its
    turns, each with its dialog id and its [start, end) in the message's text."""
    head = fill(t["memory_session"].split("{turns}", 1)[0], date=session["date"])
    join = len(t["memory_turn_join"])
    turns, position = [], len(head)
    for turn in session["turns"]:
        end = position + len(render_turn(t, turn, "memory_turn"))
        turns.append(Turn(turn["speaker"], turn["text"], turn["dia_id"], turn.get("caption", ""), (position, end)))
        position = end + join
    return HistorySession(int(session["number"]), message, session["date"], tuple(turns))


def question_text(t: Templates, question: str, category: str, not_mentioned_first: bool, adversarial: str) -> str:
    """The question with the category-2 suffix or the category-5 options appended."""
    if category == "2":
        return question + t["temporal_suffix"]
    if category == "5":
        options = [t["not_mentioned"], adversarial]
        if not not_mentioned_first:
            options.reverse()
        return question + fill(t["adversarial_suffix"], a=options[0], b=options[1])
    return question


def not_mentioned_first(t: Templates, seed: int, sample_id: str, question_index: int) -> bool:
    """Whether option (a) is the "not mentioned" answer, by the protocol's `option_order` rule."""
    rule = t["option_order"]
    if rule == "sha256_parity":  # the release: an even first 8 bytes (big-endian) put it first
        digest = hashlib.sha256(f"{seed}|{sample_id}|{question_index}|cat5".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % 2 == 0
    if rule == "random_v0":
        return random.Random(seed * 1_000_003 + question_index).random() < 0.5
    raise ValueError(f"unknown LoCoMo option_order {rule!r} (expected one of {OPTION_ORDERS})")


def render_user(t: Templates, speakers: tuple[str, str], sessions: Sequence[Session] | None, question: str) -> str:
    """The user message: the history (None: not shown) and the QA prompt for `question`."""
    qa = fill(t["qa"], question=question)
    if sessions is None:
        return fill(t["user_no_context"], qa=qa)
    start = fill(t["start"], speaker_a=speakers[0], speaker_b=speakers[1])
    return fill(t["user"], start=start, context=render_context(t, sessions), qa=qa)


def messages(t: Templates, user: str) -> list[dict[str, str]]:
    """The chat prompt: the protocol's system message, then `user`."""
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": user}]


def truncate_sessions(
    t: Templates,
    speakers: tuple[str, str],
    sessions: Sequence[Session],
    question: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> list[Session]:
    """The release's truncation (PAPER_PROTOCOL.md §1): sessions visited 1→N, each one's turns
    last→first; a turn is kept while tok(start) + tok(header + turn) + Σ tok(kept turns) + tok(qa)
    < budget. At the first failure the session stays (with the turns kept so far) and the later
    ones are dropped (the kept sessions come back chronological, as given)."""
    fixed = count_tokens(fill(t["start"], speaker_a=speakers[0], speaker_b=speakers[1]))
    fixed += count_tokens(fill(t["qa"], question=question))
    kept_tokens = 0
    out: list[Session] = []
    for session in sessions:
        header = fill(t["truncation_header"], date=session["date"])
        kept: list[dict[str, str]] = []
        stopped = False
        for turn in reversed(session["turns"]):
            rendered = render_turn(t, turn)
            if fixed + count_tokens(header + rendered) + kept_tokens < budget:
                kept.insert(0, turn)
                kept_tokens += count_tokens(rendered)
            else:
                stopped = True
                break
        out.append({**session, "turns": kept})
        if stopped:
            break
    return out
