"""Chat → training episode: the write part and the read part of METHOD.md §6.

An episode is a chat whose last message is the assistant's answer and whose second-to-last is
the user's question. It becomes two token sequences:

* **write part** — system + every earlier message, rendered with the backbone's chat template,
  tail-truncated to `max_write_length`; per token a message id (SSW's default segments: system
  tokens −1, then 0, 1, … over the other messages, each covering its whole template span) and a
  sentence id (finer SSW segments: content sentences numbered across messages, template tokens −1);
* **read part** — system + last user message + answer, tail-truncated to `max_length`; labels only
  on the answer's template tokens, from its role header through the end-of-turn token.

Consecutive messages of one role (a history of user-only document chunks, say) stay separate
messages, so separate SSW segments, whenever the chat template renders them (ChatML does). Under
a template that demands alternation (Llama-2, Mistral) the history's runs of one role are joined
with a blank line (`merge="auto"`); the merged message is then one segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jinja2 import TemplateError
from torch import Tensor

from .errors import UserError

IGNORE_INDEX = -100
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MERGE_MODES = ("auto", "always", "never")  # join consecutive same-role history messages?


class EpisodeError(UserError, ValueError):
    """A chat that cannot become an episode (one line naming the problem)."""


@dataclass
class Episode:
    write_ids: Tensor  # (Tw,) long
    message_ids: Tensor  # (Tw,) long, -1 = not written under SSW
    sentence_ids: Tensor  # (Tw,) long, -1 = not written under sentence-level SSW
    read_ids: Tensor  # (Tr,) long
    labels: Tensor  # (Tr,) long, IGNORE_INDEX outside the answer
    truncated_write: bool = False


def _checked(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    for message in messages:
        if "role" not in message or "content" not in message:
            raise EpisodeError(f"message without role/content: {str(message)[:80]}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def merge_same_role(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for message in _checked(messages):
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {"role": message["role"], "content": merged[-1]["content"] + "\n\n" + message["content"]}
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    return merged


class EpisodeBuilder:
    """Tokenises episodes for one backbone's tokenizer and chat template."""

    def __init__(
        self,
        tokenizer: Any,
        max_write_length: int = 8192,
        max_length: int = 512,
        chat_template_kwargs: dict[str, Any] | None = None,
        write_overflow: str = "truncate",
        merge: str = "auto",
    ):
        if write_overflow not in ("truncate", "error"):
            raise ValueError(f"write_overflow must be 'truncate' or 'error', got {write_overflow!r}")
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}, got {merge!r}")
        self.merge = merge
        self._renders_runs: bool | None = None  # whether the template renders consecutive same-role messages
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("episodes need a fast tokenizer (offset mapping) to assign tokens to messages")
        self.tokenizer = tokenizer
        self.max_write_length = max_write_length
        self.max_length = max_length
        self.template_kwargs = dict(chat_template_kwargs or {})
        self.write_overflow = write_overflow
        self.end_of_turn = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None

    # ----------------------------------------------------------------- rendering
    def render(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, **self.template_kwargs
        )

    def tokenize(self, text: str) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [start for start, _ in enc["offset_mapping"]]

    def _message_spans(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """Rendered text and the character offset where each message's template span starts."""
        text = self.render(messages)
        starts, previous = [], ""
        for i in range(len(messages)):
            prefix = self.render(messages[: i + 1])
            if not text.startswith(prefix):
                raise EpisodeError(
                    "the chat template renders a message differently depending on what follows it; "
                    "cannot assign tokens to messages"
                )
            starts.append(len(previous) if i else 0)
            previous = prefix
        return text, starts

    # ----------------------------------------------------------------- parts
    def renders_same_role_runs(self) -> bool:
        """Whether the chat template renders two consecutive user messages (asked once)."""
        if self._renders_runs is None:
            probe = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
            try:
                self.render(probe)
                self._renders_runs = True
            except (TemplateError, ValueError):  # a template's raise_exception for non-alternating chats
                self._renders_runs = False
        return self._renders_runs

    def split(self, messages: Sequence[dict[str, str]]) -> tuple[list[dict], list[dict], dict]:
        """(system messages, history, question) and the answer message.

        The last two messages must be the user's question and the assistant's answer. Runs of one
        role are joined under `merge="always"` (over the whole chat, the question included: a user
        message right before it becomes part of it), and under `"auto"` only in the history and only
        when the template cannot render them."""
        chat = _checked(messages)
        if self.merge == "always":
            chat = merge_same_role(chat)
        if len(chat) < 2 or chat[-1]["role"] != "assistant" or chat[-2]["role"] != "user":
            raise EpisodeError("an episode must end with a user question followed by the assistant's answer")
        system = [m for m in chat[:1] if m["role"] == "system"]
        history = chat[len(system) : -2]
        if self.merge == "auto" and not self.renders_same_role_runs():
            history = merge_same_role(history)
            if history and history[-1]["role"] == "user":
                raise EpisodeError(
                    "the chat template needs alternating roles, but the history ends with a user message "
                    "right before the question; end the history with an assistant message or use merge=always"
                )
        return system, history, {"question": chat[-2], "answer": chat[-1]}

    def write_part(self, system: list[dict], history: list[dict]) -> tuple[list[int], list[int], list[int]]:
        messages = system + history
        if not history:
            return [], [], []
        text, starts = self._message_spans(messages)
        ids, offsets = self.tokenize(text)
        ends = starts[1:] + [len(text)]
        message_ids, sentence_ids = [-1] * len(ids), [-1] * len(ids)
        sentence_spans: list[tuple[int, int, int]] = []  # (start, end, sentence id)
        next_sentence = 0
        for m, (message, start, end) in enumerate(zip(messages, starts, ends)):
            if message["role"] == "system":
                continue
            content_at = text.find(message["content"], start, end) if message["content"] else -1
            if content_at < 0:
                continue
            for part in _sentences(message["content"]):
                s = content_at + part[0]
                sentence_spans.append((s, s + part[1] - part[0], next_sentence))
                next_sentence += 1
        message_of = [i - len(system) if messages[i]["role"] != "system" else -1 for i in range(len(messages))]
        span, sent = 0, 0
        for t, offset in enumerate(offsets):
            while span + 1 < len(starts) and offset >= starts[span + 1]:
                span += 1
            message_ids[t] = message_of[span]
            while sent < len(sentence_spans) and offset >= sentence_spans[sent][1]:
                sent += 1
            if sent < len(sentence_spans) and sentence_spans[sent][0] <= offset:
                sentence_ids[t] = sentence_spans[sent][2]
        return ids, message_ids, sentence_ids

    def read_part(self, system: list[dict], question: dict, answer: dict) -> tuple[list[int], list[int]]:
        prompt = self.render(system + [question])
        full = self.render(system + [question, answer])
        if not full.startswith(prompt):
            raise EpisodeError("the chat template does not render the answer after the question")
        ids, offsets = self.tokenize(full)
        labels = [IGNORE_INDEX] * len(ids)
        for t, offset in enumerate(offsets):
            if offset >= len(prompt):
                labels[t] = ids[t]
                if ids[t] == self.end_of_turn:
                    break
        if all(label == IGNORE_INDEX for label in labels):
            raise EpisodeError("the answer produced no label tokens")
        content_at = full.find(answer["content"], len(prompt)) if answer["content"] else -1
        if content_at >= 0:  # labels must reach the answer's last token, not stop at an early "end of turn"
            end = content_at + len(answer["content"])
            last = max(t for t, offset in enumerate(offsets) if offset < end)
            if labels[last] == IGNORE_INDEX:
                raise EpisodeError(
                    f"labels stop before the answer ends: the tokenizer's eos {self.tokenizer.eos_token!r} occurs "
                    "inside the answer's template span; the eos token must be the chat template's end of turn"
                )
        return ids, labels

    def build(self, messages: Sequence[dict[str, str]]) -> Episode:
        system, history, last = self.split(messages)
        write_ids, message_ids, sentence_ids = self.write_part(system, history)
        truncated = len(write_ids) > self.max_write_length
        if truncated and self.write_overflow == "error":
            raise EpisodeError(
                f"write part has {len(write_ids)} tokens, more than max_write_length={self.max_write_length}"
            )
        keep = slice(max(0, len(write_ids) - self.max_write_length), None)  # tail truncation
        read_ids, labels = self.read_part(system, last["question"], last["answer"])
        read_keep = slice(max(0, len(read_ids) - self.max_length), None)
        as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        return Episode(
            as_long(write_ids[keep]),
            as_long(message_ids[keep]),
            as_long(sentence_ids[keep]),
            as_long(read_ids[read_keep]),
            as_long(labels[read_keep]),
            truncated,
        )


def _sentences(content: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `content`, split after . ! ? + whitespace; the whitespace
    before a sentence belongs to it (tokenizers attach a leading space to the next word)."""
    cuts = [0] + [m.start() for m in _SENTENCE_END.finditer(content)] + [len(content)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if content[a:b].strip()]


def _pad(rows: list[Tensor], value: int) -> Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def collate_episodes(episodes: list[Episode], pad_id: int, segment_unit: str = "message") -> dict[str, Tensor]:
    """Right-pad write and read parts separately. Segment ids follow `segment_unit`."""
    if segment_unit not in ("message", "sentence"):
        raise ValueError(f"segment_unit must be 'message' or 'sentence', got {segment_unit!r}")
    write = [e.write_ids for e in episodes]
    segments = [e.message_ids if segment_unit == "message" else e.sentence_ids for e in episodes]
    return {
        "write_input_ids": _pad(write, pad_id),
        "write_attention_mask": _pad([torch.ones_like(w) for w in write], 0),
        "write_segment_ids": _pad(segments, -1),
        "read_input_ids": _pad([e.read_ids for e in episodes], pad_id),
        "read_attention_mask": _pad([torch.ones_like(e.read_ids) for e in episodes], 0),
        "labels": _pad([e.labels for e in episodes], IGNORE_INDEX),
    }
