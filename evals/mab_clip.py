"""The δ-mem release's MemoryAgentBench context clipping (PAPER_PROTOCOL.md §5.2), by characters and by tokens.

Both keep a head third and a tail two thirds of a budget around a marker:
- `char_clip`: when the text is longer than `max_chars`, `text[:h].rstrip() + marker + text[-t:].lstrip()`
  with h = (max_chars - len(marker)) // 3 and t the rest (120,000 characters: h 39,989, t 79,980).
- `TokenClip`: per question, once the backbone's tokenizer and window are known (`fit`), the
  context is cut so the templated prompt leaves room for the question's new tokens:
  1. P = window - max_new_tokens; A = max(1, P - tokens(prompt with an empty context) - reserve);
  2. c = characters per token of the first `sample_chars` characters (at least 1);
  3. a character clip at max(min_char_cap, min(char_cap_factor·A·c, model_max_factor·model_max_length·c));
  4. if the context is still over A tokens: its first (A - tokens(marker)) // 3 tokens, the marker,
     and its last A - tokens(marker) - head tokens, each side decoded;
  5. if the templated prompt still exceeds P, step 4 again with (context tokens - excess - reserve).
Tokens are counted as the decoder counts them: the chat template rendered to text, then encoded
without special tokens. The numbers are the benchmark config's (`paper.prompts.token_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


def char_clip(text: str, max_chars: int | None, marker: str) -> str:
    """Head third + marker + tail two thirds of `max_chars` characters (the text itself when it fits)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = max(0, (max_chars - len(marker)) // 3)
    tail = max(0, max_chars - len(marker) - head)
    return text[:head].rstrip() + marker + text[len(text) - tail :].lstrip()


@dataclass
class TokenClip:
    """Step 2 of the release's clipping; `tokenizer` is a Hugging Face tokenizer."""

    tokenizer: Any
    window: int
    marker: str
    template_kwargs: dict[str, Any]
    reserve: int = 32
    sample_chars: int = 8192
    min_char_cap: int = 32768
    char_cap_factor: float = 1.25
    model_max_factor: float = 0.9

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )
        return len(self.encode(rendered))

    def cut(self, ids: list[int], budget: int) -> str:
        """The first third and last two thirds of `budget` tokens (marker included), decoded."""
        room = budget - len(self.encode(self.marker))
        head = max(0, room // 3)
        tail = max(0, room - head)
        decode = self.tokenizer.decode
        return decode(ids[:head]).rstrip() + self.marker + decode(ids[len(ids) - tail :]).lstrip()

    def clip(self, context: str, render: Callable[[str], list[dict[str, str]]], max_new_tokens: int) -> str:
        """`context` clipped so that `render(context)` (the prompt's messages) fits the window."""
        limit = self.window - max_new_tokens
        allowed = max(1, limit - self.prompt_tokens(render("")) - self.reserve)
        sample = context[: self.sample_chars]
        per_token = max(1.0, len(sample) / max(1, len(self.encode(sample))))
        model_max = float(getattr(self.tokenizer, "model_max_length", None) or float("inf"))
        cap = max(self.min_char_cap, min(self.char_cap_factor * allowed * per_token,
                                         self.model_max_factor * model_max * per_token))
        text = char_clip(context, int(cap), self.marker)
        ids = self.encode(text)
        if len(ids) > allowed:
            text = self.cut(ids, allowed)
        excess = self.prompt_tokens(render(text)) - limit
        if excess > 0:
            ids = self.encode(text)
            text = self.cut(ids, max(1, len(ids) - excess - self.reserve))
        return text


__all__ = ["TokenClip", "char_clip"]
