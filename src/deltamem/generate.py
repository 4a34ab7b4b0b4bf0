"""Answering questions under the evaluation conditions of EVAL_PROTOCOLS.md.

* `no_context`   — question only, empty memory: exactly the frozen backbone.
* `full_context` — the whole history in the prompt; δ-mem also writes it online during prefill.
* `memory_only`  — the history is written into the state in chunks (each within the context
  window, no KV cache kept), then the question alone is asked with writes off.

One batch holds several episodes: each row has its own history and so its own state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .attach import DeltaMemModel
from .episodes import EpisodeBuilder

CONDITIONS = ("no_context", "full_context", "memory_only")


@dataclass
class Prompt:
    ids: list[int]
    segments: list[int]  # SSW message ids (-1 = not written)
    history_ids: list[int]  # for memory_only
    history_segments: list[int]


def build_prompt(builder: EpisodeBuilder, messages: Sequence[dict[str, str]], condition: str) -> Prompt:
    """Token ids of the prompt (ending with the generation prompt) and the history to write."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    system, history, last = builder.split(messages)
    question = last["question"]
    history_ids, history_segments, _ = builder.write_part(system, history)
    shown = system + history + [question] if condition == "full_context" else system + [question]
    text = builder.render(shown, generation_prompt=True)
    ids, _ = builder.tokenize(text)
    if condition == "full_context":
        written, segments, _ = builder.write_part(system, history + [question])
        segments = segments[: len(ids)] + [-1] * max(0, len(ids) - len(written))
    else:
        segments = [-1] * len(ids)
    if condition != "memory_only":
        history_ids, history_segments = [], []
    return Prompt(ids, segments, history_ids, history_segments)


def _left_pad(rows: list[list[int]], value: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def generate_answers(
    model: DeltaMemModel,
    builder: EpisodeBuilder,
    chats: Sequence[Sequence[dict[str, str]]],
    condition: str,
    max_new_tokens: int = 16,
    write_chunk_size: int | None = None,
    generation_kwargs: dict[str, Any] | None = None,
    use_memory: bool = True,
) -> list[str]:
    """Greedy answers (first non-empty line) for a batch of chats under one condition.
    `use_memory=False` keeps the state empty and writes off: exactly the frozen backbone."""
    tokenizer = builder.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [build_prompt(builder, chat, condition) for chat in chats]
    device = next(model.parameters()).device
    model.reset_state()
    if condition == "memory_only" and use_memory:
        history, history_mask = _left_pad([p.history_ids for p in prompts], pad)
        segments, _ = _left_pad([p.history_segments for p in prompts], -1)
        segments = segments.masked_fill(history_mask == 0, -1)
        if history.shape[1]:
            needs_segments = model.memory_config.write == "ssw"
            model.write_history(
                history.to(device),
                history_mask.to(device),
                segments.to(device) if needs_segments else None,
                write_chunk_size,
            )
    ids, mask = _left_pad([p.ids for p in prompts], pad)
    segments, _ = _left_pad([p.segments for p in prompts], -1)
    segments = segments.masked_fill(mask == 0, -1)
    write = condition == "full_context" and use_memory
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        segment_ids=segments.to(device) if write and model.memory_config.write == "ssw" else None,
        write=write,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        **(generation_kwargs or {}),
    )
    texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    model.reset_state()
    return [first_line(t) for t in texts]


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
