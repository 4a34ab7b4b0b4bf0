"""The base every chat-model method extends, and the frozen backbone as a method ("vanilla").

`ChatModelMethod` answers each query with the prompt the runner gives it, through a
`ChatDecoder` (shared-prefix batching, per-row sampling). `FrozenBackbone` is that and nothing
more: it memorises nothing, so under `memory_only` it is exactly `no_context`.

Subclasses change one of three things:
* `make_backend` — what a forward call does (δ-mem writes/reads its state; MLP memory mixes logits);
* `prompt_messages` — what the prompt holds (BM25 RAG inserts retrieved chunks, LLMLingua-2 compresses);
* `memorize` / `reset` — what is kept between a context's questions.
"""

from __future__ import annotations

from typing import Any, Sequence

from evals.conditions import ALL_CONDITIONS
from evals.decoding import ChatDecoder, DecoderBackend
from evals.methods import Answer, History, Query


def context_window(model: Any, fallback: int = 4096) -> int:
    """The backbone's context length from its config (`max_position_embeddings`)."""
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or fallback)


class ChatModelMethod:
    """A frozen chat backbone answering through the shared-prefix decoder; subclasses add memory."""

    name = "chat_model"
    conditions: tuple[str, ...] = ALL_CONDITIONS
    memorizes = True  # False: `memorize` keeps nothing, so the runner may pack contexts into shared calls

    def __init__(
        self,
        loaded: Any,  # deltamem.backbones.LoadedBackbone
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        if loaded.tokenizer is None:
            raise ValueError(f"backbone {loaded.spec.name} has no tokenizer; evaluation needs one")
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.template_kwargs = dict(loaded.spec.chat_template_kwargs or {})
        if name is not None:
            self.name = name
        window = max_context_tokens or context_window(self.model)
        self.decoder = ChatDecoder(
            self.make_backend(), self.tokenizer, window, batch_size, prefill_chunk, self.template_kwargs
        )

    @property
    def model(self) -> Any:
        return self.loaded.model

    def make_backend(self) -> DecoderBackend:
        return DecoderBackend(self.model)

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.decoder.forget_prefix()

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        encoded = [self.encode(self.prompt_messages(q)) for q in queries]
        return self.decoder.generate(
            [ids for ids, _ in encoded],
            [q.generation for q in queries],
            [segments for _, segments in encoded],
            self.memory_keys(queries),
        )

    def reset(self) -> None:
        self.decoder.forget_prefix()

    def cost(self) -> dict[str, Any]:
        return {"extra_trainable_params": 0}

    # ----------------------------------------------------------------- hooks for subclasses
    def memory_keys(self, queries: Sequence[Query]) -> list[str | None] | None:
        """Which memory answers each query (None: the one memory, or none, the method holds)."""
        return None

    def prompt_messages(self, query: Query) -> list[dict[str, str]]:
        """The chat actually sent for `query` (the runner's prompt, unchanged here)."""
        return query.messages

    def encode(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
        """Prompt token ids (ending with the generation prompt) and per-token segment ids (-1 here)."""
        ids = self.decoder.encode(messages)
        return ids, [-1] * len(ids)


class FrozenBackbone(ChatModelMethod):
    """The frozen backbone answering from its prompt alone (config `method=vanilla`): under
    `memory_only` it is exactly `no_context`, the floor every memory method is measured against."""

    name = "vanilla"
    memorizes = False
