"""Batched chat decoding with a shared prefix: "inject once, query many".

`ChatDecoder.generate` answers several prompts that usually share a long head (the same
conversation followed by different questions):

1. the longest common token prefix of the prompts is run **once** (in chunks if long), its KV
   cache and the backend's recurrent state (δ-mem) kept — and reused by the next call whose
   prompts start with the same prefix (the next batch of the same context);
2. per batch, the cache and state are copied to the batch size, each prompt's own tail is
   left-padded *between* the prefix and the tail (mask 0 there, explicit position ids continuing
   from the prefix, so padding shifts nothing), and decoding runs with per-row settings: greedy or
   sampling with its own temperature / top-k / top-p and its own seeded generator, so a row's
   tokens never depend on which other rows share its batch.

Prompts longer than the window lose tokens from the middle of the shared prefix (the head with
the instructions and the tail next to the question stay), recorded as `truncated_tokens`.

The backend is where methods differ: `DecoderBackend` is the frozen model; δ-mem's backend
turns writes on/off per phase and snapshots its state; a kNN/MLP-memory backend mixes logits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from deltamem.decode_loops import AfterPrompt, EagerLoop, StaticLoop, fits_static
from deltamem.hf_compat import cache_argument, returned_cache
from deltamem.row_sampling import RowSettings, graph_sampling_available
from evals.methods import Answer
from evals.types import Generation


class DecoderBackend:
    """Forward calls of a frozen causal LM; subclasses add recurrent state or logit mixing."""

    wants_segments = False  # True: `forward` needs per-token message ids (δ-mem SSW)
    graph_safe = True  # a decode step is capturable as a CUDA graph (`forward` takes `cache_position`)
    pinnable: Any = None  # a model whose recurrent state `StaticLoop` pins (δ-mem), or None

    def __init__(self, model: Any):
        self.model = model

    def forward(
        self,
        input_ids: Tensor,  # (B, T)
        attention_mask: Tensor,  # (B, past + T), or (B, L) over a static cache
        position_ids: Tensor,  # (B, T)
        cache: Any,
        phase: str,  # "prefix" | "prompt" | "decode"
        segment_ids: Tensor | None = None,  # (B, T) when wants_segments
        cache_position: Tensor | None = None,  # (T,) the static cache's slots (StaticLoop)
    ) -> tuple[Tensor, Any]:
        """Logits of the last position (B, V) in fp32 and the updated cache."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **cache_kwargs(self.model, cache),
            **slots(cache_position),
        )
        return out.logits[:, -1].float(), returned_cache(out)

    def save_state(self) -> Any:
        """The recurrent state after a prefix (None: the backbone has none)."""
        return None

    def load_state(self, saved: Any, batch: int, keys: Sequence[str | None] | None = None) -> None:
        """Restore `save_state`'s result for `batch` rows; when `saved` is None, each row starts
        from the memory of its key (`keys`, one per row; None: the method's only memory)."""


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The KV-cache keyword of this transformers version (`cache` from 5.2x, `past_key_values` before)."""
    return {cache_argument(model): cache}


def slots(cache_position: Tensor | None) -> dict[str, Tensor]:
    """`cache_position` for a forward call when a static cache needs it (none otherwise)."""
    return {} if cache_position is None else {"cache_position": cache_position}


DECODE_LOOPS = ("auto", "eager", "graph")


@dataclass
class _Prefix:
    ids: tuple[int, ...]
    cache: Any
    state: Any
    key: str | None = None  # whose memory the prefix was run over


class ChatDecoder:
    """Renders chats with the backbone's template and generates answers in batches."""

    def __init__(
        self,
        backend: DecoderBackend,
        tokenizer: Any,
        max_context_tokens: int,
        batch_size: int = 8,
        prefill_chunk: int = 4096,
        chat_template_kwargs: dict[str, Any] | None = None,
        stop_check_every: int = 8,
        decode_loop: str = "eager",
        graph_bucket: int = 1024,
    ):
        """decode_loop: `eager` (one forward per token over the growing cache: any backend),
        `graph` (static-cache steps, replayed from a CUDA graph on CUDA and run eagerly on CPU; a
        backend that cannot be captured is an error), or `auto` (`graph` on CUDA where it applies,
        else `eager`; to become the default once a GPU has shown it gives the eager tokens,
        conf/config.yaml). Greedy and sampled rows alike (`deltamem.row_sampling`).
        Each batch's loop is counted in `loops_used`. graph_bucket: the static cache's length is
        rounded up to a multiple of it, so one captured graph serves batches of similar length."""
        self.graph_bucket, self._static = int(graph_bucket), None
        self.use_loop(decode_loop)
        self.loops_used: dict[str, int] = {}
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_context_tokens = int(max_context_tokens)
        self.batch_size = int(batch_size)
        self.prefill_chunk = int(prefill_chunk)
        self.template_kwargs = dict(chat_template_kwargs or {})
        self.stop_check_every = int(stop_check_every)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = _stop_ids(tokenizer, backend.model)
        self._prefix: _Prefix | None = None

    @property
    def device(self) -> torch.device:
        return next(self.backend.model.parameters()).device

    # ----------------------------------------------------------------- prompts
    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def use_loop(self, decode_loop: str, graph_bucket: int | None = None) -> None:
        """Switch the token loop (`decode_loop` as in __init__) for the batches that follow."""
        if decode_loop not in DECODE_LOOPS:
            raise ValueError(f"decode_loop must be one of {DECODE_LOOPS}, got {decode_loop!r}")
        self.decode_loop = decode_loop
        if graph_bucket is not None and int(graph_bucket) != self.graph_bucket:
            self.graph_bucket, self._static = int(graph_bucket), None

    def forget_prefix(self) -> None:
        """Drop the kept prefix (call when the method's memory changes)."""
        self._prefix = None

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[list[int]],
        generations: Sequence[Generation],
        segments: Sequence[list[int]] | None = None,
        memory_keys: Sequence[str | None] | None = None,
    ) -> list[Answer]:
        """One answer per prompt (token ids ending with the generation prompt).

        `memory_keys` (one per prompt) name the memory each prompt is answered from, for a backend
        holding several (δ-mem after `memorize_many`). Prompts over different memories share no
        prefix: the prefix's keys and values depend on the memory that read it."""
        if len(prompts) != len(generations):
            raise ValueError(f"{len(prompts)} prompts but {len(generations)} generation settings")
        keys = list(memory_keys) if memory_keys is not None else [None] * len(prompts)
        if len(keys) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(keys)} memory keys")
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        if segments is None:
            segments = [[-1] * len(p) for p in prompts]
        budget = self.max_context_tokens - max(g.max_new_tokens for g in generations)
        if budget < 2:
            raise ValueError(
                f"max_new_tokens={max(g.max_new_tokens for g in generations)} leaves no room for a prompt in a "
                f"{self.max_context_tokens}-token context window"
            )
        one_memory = len(set(keys)) == 1
        shared = _common_prefix_length(prompts) if one_memory else 0
        prefix, prefix_segments, tails, tail_segments, dropped = _fit(prompts, segments, shared, budget)
        prefix_state = self._run_prefix(prefix, prefix_segments, keys[0] if one_memory else None)
        answers: list[Answer] = [None] * len(prompts)  # type: ignore[list-item]
        order = sorted(range(len(prompts)), key=lambda i: len(tails[i]))  # similar lengths share a batch
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            outs = self._generate_batch(
                prefix_state,
                [tails[i] for i in rows],
                [tail_segments[i] for i in rows],
                [generations[i] for i in rows],
                [keys[i] for i in rows],
            )
            for i, tokens in zip(rows, outs):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                answers[i] = Answer(text, len(prefix) + len(tails[i]), len(tokens), dropped[i])
        return answers

    def _run_prefix(self, prefix: list[int], segments: list[int], key: str | None = None) -> _Prefix:
        ids = tuple(prefix)
        if self._prefix is not None and self._prefix.ids == ids and self._prefix.key == key:
            return self._prefix
        self._prefix = None  # free the old cache before building a new one
        if not ids:
            return _Prefix(ids, None, None, key)  # nothing to run (and nothing worth keeping)
        self.backend.load_state(None, 1, [key])
        cache = None
        device = self.device
        for start in range(0, len(ids), self.prefill_chunk):
            chunk = torch.tensor([ids[start : start + self.prefill_chunk]], device=device)
            seg = torch.tensor([segments[start : start + self.prefill_chunk]], device=device)
            end = start + chunk.shape[1]
            mask = torch.ones(1, end, dtype=torch.long, device=device)
            positions = torch.arange(start, end, device=device)[None]
            _, cache = self.backend.forward(chunk, mask, positions, cache, "prefix", seg)
        self._prefix = _Prefix(ids, cache, self.backend.save_state(), key)
        return self._prefix

    def _generate_batch(
        self,
        prefix: _Prefix,
        tails: list[list[int]],
        tail_segments: list[list[int]],
        settings: list[Generation],
        keys: list[str | None],
    ) -> list[list[int]]:
        device, B, P = self.device, len(tails), len(prefix.ids)
        width = max(len(t) for t in tails)
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        seg = torch.full((B, width), -1, dtype=torch.long)
        tail_mask = torch.zeros(B, width, dtype=torch.long)
        for i, (tail, tseg) in enumerate(zip(tails, tail_segments)):
            ids[i, width - len(tail) :] = torch.tensor(tail)
            seg[i, width - len(tail) :] = torch.tensor(tseg)
            tail_mask[i, width - len(tail) :] = 1
        ids, seg, tail_mask = ids.to(device), seg.to(device), tail_mask.to(device)
        mask = torch.cat([torch.ones(B, P, dtype=torch.long, device=device), tail_mask], dim=1)
        positions = (P + tail_mask.cumsum(1) - 1).clamp(min=P)
        cache = None
        if P:
            cache = copy.deepcopy(prefix.cache)
            if B > 1:
                cache.batch_repeat_interleave(B)
        self.backend.load_state(prefix.state, B, keys)
        logits, cache = self.backend.forward(ids, mask, positions, cache, "prompt", seg)

        rows = row_settings(settings)
        start = AfterPrompt(
            logits, cache, mask, positions[:, -1],
            limit=torch.tensor([g.max_new_tokens for g in settings], device=device),
            steps=max(g.max_new_tokens for g in settings),  # a host int: no device sync per step
        )
        del logits, cache  # held by `start` alone: the static loop frees the prompt's cache once copied
        loop = self._loop(rows, start)
        out, lengths = loop.run(self.backend.forward, start, rows)
        self.loops_used[loop.name] = self.loops_used.get(loop.name, 0) + 1
        lengths = lengths.tolist()
        return [out[i, : lengths[i]].tolist() for i in range(B)]

    def _loop(self, rows: RowSettings, start: AfterPrompt) -> EagerLoop | StaticLoop:
        """The loop this batch decodes with (`decode_loop`; see __init__)."""
        stops = torch.tensor(sorted(self.stop_ids), device=start.mask.device)
        if self.decode_loop == "eager" or (self.decode_loop == "auto" and start.mask.device.type != "cuda"):
            return EagerLoop(self.pad_id, stops, self.stop_check_every)
        reason = self._static_unfit(rows, start)
        if reason is None:
            if self._static is None:
                self._static = StaticLoop(self.backend.model, self.pad_id, stops, self.stop_check_every,
                                          bucket=self.graph_bucket, state=self.backend.pinnable)
            self._static.stops = stops  # `stop_ids` may have changed since
            return self._static
        if self.decode_loop == "graph":
            raise ValueError(f"decode_loop=graph cannot decode this batch: {reason} (use decode_loop=auto or eager)")
        return EagerLoop(self.pad_id, stops, self.stop_check_every)

    def _static_unfit(self, rows: RowSettings, start: AfterPrompt) -> str | None:
        """Why the static loop cannot run this batch, or None when it can."""
        if rows.any_sample and start.mask.device.type == "cuda" and not graph_sampling_available():
            return "its rows sample, and this torch cannot register a generator with a CUDA graph"
        if not self.backend.graph_safe:
            return f"{type(self.backend).__name__} is not graph-safe (see its `graph_safe`)"
        if not fits_static(start.cache, start.mask.shape[1]):
            return "the prompt's cache does not hold every position (a sliding-window layer?)"
        memory = self.backend.pinnable
        if memory is not None and memory.memory_config.state_dtype_between_calls != "float32":
            return "δ-mem keeps its state in low precision between calls (the graph updates it in place in fp32)"
        return None


def row_settings(settings: Sequence[Generation]) -> RowSettings:
    """The decoding settings of a batch's rows, as the token loops take them."""
    return RowSettings(
        do_sample=[g.do_sample for g in settings], temperature=[g.temperature for g in settings],
        top_k=[g.top_k for g in settings], top_p=[g.top_p for g in settings], seeds=[g.seed for g in settings],
    )


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    return ids


def _common_prefix_length(prompts: Sequence[list[int]]) -> int:
    """Length of the longest common prefix, leaving every prompt at least one token of its own."""
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def _fit(
    prompts: Sequence[list[int]], segments: Sequence[list[int]], shared: int, budget: int
) -> tuple[list[int], list[int], list[list[int]], list[list[int]], list[int]]:
    """Split prompts into (shared prefix, tails), dropping tokens from the prefix's middle to fit `budget`."""
    prefix, prefix_seg = list(prompts[0][:shared]), list(segments[0][:shared])
    tails = [list(p[shared:]) for p in prompts]
    tail_segs = [list(s[shared:]) for s in segments]
    longest_tail = max(len(t) for t in tails)
    if shared + longest_tail <= budget:
        return prefix, prefix_seg, tails, tail_segs, [0] * len(prompts)
    if longest_tail < budget:  # shrink the shared prefix only: sharing survives
        keep = budget - longest_tail
        head, tail = keep // 2, keep - keep // 2
        cut = lambda xs: xs[:head] + xs[len(xs) - tail :]  # noqa: E731
        return cut(prefix), cut(prefix_seg), tails, tail_segs, [shared - keep] * len(prompts)
    # a tail alone is too long: cut each whole prompt on its own, nothing shared
    fitted, fitted_segs, dropped = [], [], []
    for p, s in zip(prompts, segments):
        if len(p) <= budget:
            fitted.append(list(p))
            fitted_segs.append(list(s))
            dropped.append(0)
        else:
            head, tail = budget // 2, budget - budget // 2
            fitted.append(list(p[:head]) + list(p[len(p) - tail :]))
            fitted_segs.append(list(s[:head]) + list(s[len(s) - tail :]))
            dropped.append(len(p) - budget)
    return [], [], fitted, fitted_segs, dropped
