"""MemoryAgentBench prompts under the two protocols; every template comes from the benchmark config.

- `PaperPrompts` (the δ-mem release, PAPER_PROTOCOL.md §5.2): one user message, the unified
  `MEM_QA` template over the row's context pre-clipped to 120,000 characters and, once a backbone is
  known (`fit`), clipped by tokens to its window (evals/mab_clip.py). The question is stripped.
- `OfficialPrompts` (MemoryAgentBench's long-context agent, `HUST-AI-HYZ/MemoryAgentBench` @ `455306d`
  `utils/templates.py`, `conversation_creator.py`, `agent.py`): the context cut into chunks of nltk
  sentences of at most `chunk_tokens` tokens (`utils/eval_other_utils.py chunk_text_into_sentences`;
  a first sentence longer than that leaves an empty first chunk, as there), each chunk wrapped in
  the source's memorize template (the literal backslash-n after the time stamp kept) and appended
  with a newline; then the system message and one user message: that memory, a newline, and the
  source's query template filled with the raw question (`{{label}}` stays the text `{label}`).
  The harness stamps each chunk with the wall-clock time; the config pins `time_stamp` so prompts are
  reproducible (`now` restores the clock). Tokens are counted with tiktoken's gpt-4o-mini encoding
  (`chunk_tokenizer: tiktoken:gpt-4o-mini`, whose BPE file must be in tiktoken's cache offline).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Callable, Sequence

from deltamem.errors import UserError
from evals.mab_aggregate import first_match
from evals.mab_clip import TokenClip, char_clip
from evals.types import BenchmarkDataError

Messages = list[dict[str, str]]


class ChunkerUnavailableError(UserError, RuntimeError):
    """The official chunker's tokenizer cannot be loaded (tiktoken missing, or its BPE file offline)."""


class PaperPrompts:
    """The release's unified prompt (`prompt`), plus this harness's question-only form for the
    conditions that show no history (`prompt_without_context`) and the text memory methods memorise
    (`history`); the release has neither."""

    def __init__(self, prompt: str, prompt_without_context: str, history: str, max_context_chars: int | None,
                 marker: str, token_clip: dict[str, Any] | None = None) -> None:
        self.template, self.question_only, self.history = prompt, prompt_without_context, history
        self.max_context_chars, self.marker = max_context_chars, marker
        self.token_clip = dict(token_clip or {})
        self.clipper: TokenClip | None = None

    def fit(self, tokenizer: Any, window: int, template_kwargs: dict[str, Any]) -> None:
        """Clip each prompt by tokens to `window` from now on (the release's step 2)."""
        self.clipper = TokenClip(tokenizer, int(window), self.marker, dict(template_kwargs), **self.token_clip)

    def context_text(self, raw: str) -> str:
        return char_clip(raw, self.max_context_chars, self.marker)

    def history_messages(self, text: str, source: str) -> Messages:
        return [{"role": "user", "content": self.history.format(context=text)}]

    def prompt(self, question: str, history: str | None, source: str, max_new_tokens: int) -> Messages:
        question = question.strip()
        if history is None:
            return [{"role": "user", "content": self.question_only.format(question=question)}]

        def render(context: str) -> Messages:
            return [{"role": "user", "content": self.template.format(context=context, question=question)}]

        if self.clipper is not None:
            history = self.clipper.clip(history, render, max_new_tokens)
        return render(history)


def tiktoken_counter(model: str) -> Callable[[str], int]:
    """Token counts of tiktoken's encoding for `model` (special `<|endoftext|>` allowed, as the harness)."""
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except Exception as error:  # noqa: BLE001 - import, unknown model or an offline BPE download
        raise ChunkerUnavailableError(
            f"protocol=official chunks contexts by tiktoken's {model!r} encoding, which could not be loaded "
            f"({type(error).__name__}: {error}); install tiktoken and put its BPE file in TIKTOKEN_CACHE_DIR"
        ) from error
    return lambda text: len(encoding.encode(text, allowed_special={"<|endoftext|>"}))


TOKEN_COUNTERS: dict[str, Callable[[str], Callable[[str], int]]] = {
    "tiktoken": tiktoken_counter,
    "words": lambda _: lambda text: len(text.split()),  # whitespace words: tests and offline trials only
}


def counter(spec: str) -> Callable[[str], int]:
    """`"tiktoken:gpt-4o-mini"` or `"words"` -> a function counting the tokens of a text."""
    kind, _, argument = spec.partition(":")
    if kind not in TOKEN_COUNTERS:
        raise ValueError(f"unknown chunk_tokenizer {spec!r}; expected one of {sorted(TOKEN_COUNTERS)} (kind:argument)")
    return TOKEN_COUNTERS[kind](argument)


def sentences(text: str) -> list[str]:
    """nltk's English sentence split (punkt_tab built offline when missing)."""
    import nltk

    from evals.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()
    return nltk.sent_tokenize(text)


def chunk_sentences(parts: Sequence[str], count: Callable[[str], int], chunk_tokens: int) -> list[str]:
    """Sentences packed greedily into space-joined chunks of at most `chunk_tokens` tokens."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for sentence in parts:
        size = count(sentence)
        if used + size > chunk_tokens:
            chunks.append(" ".join(current))  # "" when the very first sentence is too long, as upstream
            current, used = [sentence], size
        else:
            current.append(sentence)
            used += size
    if current:
        chunks.append(" ".join(current))
    return chunks


class OfficialPrompts:
    """MemoryAgentBench's long-context-agent prompts (module docstring)."""

    def __init__(self, system: str, time_stamp: str, chunk_tokens: int, chunk_tokenizer: str,
                 families: Sequence[dict[str, Any]], memorize: dict[str, str], query: dict[str, str]) -> None:
        missing = sorted({r["family"] for r in families if r["family"] not in memorize or r["family"] not in query})
        if missing:
            raise ValueError(f"official MemoryAgentBench templates missing for {missing}")
        self.system, self.time_stamp = system, time_stamp
        self.chunk_tokens, self.chunk_tokenizer = int(chunk_tokens), chunk_tokenizer
        self.families, self.memorize, self.query = [dict(r) for r in families], dict(memorize), dict(query)

    def family(self, source: str) -> str:
        rule = first_match(self.families, source)
        if rule is None:
            raise BenchmarkDataError(f"source {source!r} has no official MemoryAgentBench template (utils/templates.py "
                             f"raises for it too); known families: {sorted(self.memorize)}")
        return rule["family"]

    def context_text(self, raw: str) -> str:
        return raw

    def stamp(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S") if self.time_stamp == "now" else self.time_stamp

    def wrapped_chunks(self, text: str, source: str) -> list[str]:
        """Each chunk of the context in the source's memorize template."""
        template = self.memorize[self.family(source)]
        fill = {"time_stamp": self.stamp()} if "{time_stamp}" in template else {}
        return [template.format(context=c, **fill) for c in self._chunks(text)]

    @lru_cache(maxsize=8)
    def _chunks(self, text: str) -> tuple[str, ...]:
        return tuple(chunk_sentences(sentences(text), counter(self.chunk_tokenizer), self.chunk_tokens))

    @lru_cache(maxsize=8)
    def memory(self, text: str, source: str) -> str:
        """The agent's context after memorising every chunk (each appended after a newline, stripped)."""
        memory = ""
        for wrapped in self.wrapped_chunks(text, source):
            memory = (memory + "\n" + wrapped).strip()
        return memory

    def history_messages(self, text: str, source: str) -> Messages:
        return [{"role": "user", "content": wrapped} for wrapped in self.wrapped_chunks(text, source)]

    def prompt(self, question: str, history: str | None, source: str, max_new_tokens: int) -> Messages:
        query = self.query[self.family(source)].format(question=question)
        user = query if history is None else self.memory(history, source) + "\n" + query
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


__all__ = ["ChunkerUnavailableError", "OfficialPrompts", "PaperPrompts", "chunk_sentences", "counter", "sentences"]
