"""δ-mem as a memory method of the evaluation runner (config `method=deltamem`).

* `memorize(history)` writes the history into the state in chunks that each fit the context
  window (no KV cache kept) and keeps that state as the base every question starts from.
* `memorize_many(histories)` writes several histories as one batch (right-padded, so each row's
  chunks start at its own first token and its state equals writing it alone) and keeps one base
  state per history; each query is then answered from the state of its `context_id`.
* `answer(queries)` decodes through the shared-prefix `ChatDecoder`; the δ-mem backend snapshots
  the state after the shared prefix and copies it to every row of a batch.
* Prompt writes (`prompt_writes`): `auto` writes the prompt online (the paper's full-context and
  no-history runs) unless a history was memorised, in which case the question is read with
  writes off, as in training's read pass; `always` / `never` force either. Generated tokens are
  written when the prompt is, except under SSW, whose message is incomplete until generation ends.

* Write chunks (`write_chunks`): `tokens` cuts a history into `write_chunk_size`-token write calls
  wherever they fall; `messages` starts a new write call at every message (a LoCoMo session), as a
  conversation fed one session at a time does (`evals/deltamem_sessions.py`).

The adapter is ours (`adapter_config.json` + safetensors) or the public release's
(`delta_mem_config.json` + `delta_mem_adapter.pt`); its stored memory config wins over `memory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from deltamem.adapters import adapter_sha256, load_adapter, read_adapter_config
from deltamem.attach import DeltaMemModel, attach_memory
from deltamem.config import DeltaMemConfig
from deltamem.episodes import EpisodeBuilder
from deltamem.state import MemoryState

from .chat_method import ChatModelMethod
from .decoding import DecoderBackend, cache_kwargs, returned_cache, slots
from .methods import History

PROMPT_WRITES = ("auto", "always", "never")
WRITE_CHUNKS = ("tokens", "messages")  # where a history's write calls break (see `write_chunks`)


class DeltaMemBackend(DecoderBackend):
    """Forward calls with δ-mem writes on/off per phase, and the state as the decoder's recurrent state."""

    def __init__(self, memory_model: DeltaMemModel):
        super().__init__(memory_model.base_model)
        self.memory_model = memory_model
        self.wants_segments = memory_model.memory_config.strategy.needs_segments
        self.write_prompt = True
        self.base_state: MemoryState | None = None  # the memorised history (batch 1), None = empty
        self.base_rows: dict[str, int] | None = None  # after memorize_many: context id → row of base_state
        self.pinnable = memory_model  # a static decode loop pins its state (updated in place by each step)

    def forward(self, input_ids, attention_mask, position_ids, cache, phase, segment_ids=None, cache_position=None):
        write = self.write_prompt and (phase != "decode" or self.memory_model.writes_during_decode)
        out = self.memory_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            write=write,
            segment_ids=segment_ids if write and self.wants_segments else None,
            **cache_kwargs(self.model, cache),
            **slots(cache_position),
        )
        return out.logits[:, -1].float(), returned_cache(out)

    def save_state(self) -> MemoryState:
        return self.memory_model.get_state().clone()

    def load_state(self, saved: MemoryState | None, batch: int, keys=None) -> None:
        if saved is None and self.base_rows is not None and self.base_state is not None:
            if keys is None or len(keys) != batch:
                raise ValueError(f"{len(self.base_rows)} memories are held: every row needs its context id")
            missing = [k for k in keys if k not in self.base_rows]
            if missing:
                raise KeyError(f"no memory was written for context {missing[0]!r}")
            self.memory_model.set_state(self.base_state.select([self.base_rows[k] for k in keys]))
            return
        saved = saved if saved is not None else self.base_state
        if saved is None or saved.batch_size is None:
            self.memory_model.reset_state()
        else:
            self.memory_model.set_state(saved.expand(batch) if batch != saved.batch_size else saved)


class DeltaMemMethod(ChatModelMethod):
    """The frozen backbone with a trained δ-mem adapter (or an untrained memory config, for tests)."""

    name = "deltamem"

    def __init__(
        self,
        loaded: Any,
        memory: DeltaMemConfig | None = None,
        adapter: str | None = None,
        prompt_writes: str = "auto",
        write_chunk_size: int | None = None,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
        memorize_batch_tokens: int = 65536,
        untrained: bool = False,
        write_chunks: str = "tokens",
        trained: DeltaMemModel | None = None,
    ):
        """`trained`: a memory already attached to `loaded.model` and trained in this process (the
        quickstart), used as it is instead of attaching one and loading an adapter."""
        if prompt_writes not in PROMPT_WRITES:
            raise ValueError(f"prompt_writes must be one of {PROMPT_WRITES}, got {prompt_writes!r}")
        if write_chunks not in WRITE_CHUNKS:
            raise ValueError(f"write_chunks must be one of {WRITE_CHUNKS}, got {write_chunks!r}")
        self.write_chunks = write_chunks
        if trained is not None:
            if adapter is not None or untrained:
                raise ValueError("method=deltamem: a model trained in this process takes no adapter= or untrained")
            memory = trained.memory_config
        elif adapter is not None:
            if untrained:
                raise ValueError("method=deltamem: adapter= and method.untrained=true contradict each other")
            if not Path(adapter).is_dir():
                raise FileNotFoundError(f"δ-mem adapter folder {adapter} does not exist")
            memory = read_adapter_config(adapter)
        elif not untrained:
            raise ValueError(
                "method=deltamem needs adapter=<folder> (a trained δ-mem); to evaluate the untrained memory "
                "on purpose (tests, speed), add method.untrained=true: its rows are then labelled _untrained"
            )
        if memory is None:
            raise ValueError("method=deltamem with method.untrained=true needs a memory config (memory=tsw, ...)")
        self.memory_model = trained if trained is not None else attach_memory(loaded.model, memory)
        if adapter is not None:
            load_adapter(self.memory_model, adapter)
        self.memory_model.eval()
        self.adapter = adapter
        self.prompt_writes = prompt_writes
        self.memorize_batch_tokens = int(memorize_batch_tokens)
        self.memorized = False
        default_name = f"deltamem_{memory.write}" + ("_untrained" if untrained else "")
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name or default_name)
        self.write_chunk_size = write_chunk_size or self.decoder.max_context_tokens
        self.builder = EpisodeBuilder(self.tokenizer, chat_template_kwargs=self.template_kwargs)

    def make_backend(self) -> DeltaMemBackend:
        return DeltaMemBackend(self.memory_model)

    @property
    def backend(self) -> DeltaMemBackend:
        return self.decoder.backend  # type: ignore[return-value]

    # ----------------------------------------------------------------- the interface
    @torch.no_grad()
    def memorize(self, history: History) -> None:
        self.reset()
        ids, segments, messages = self._history_tokens(history)
        self._keep(self._write([ids], [segments], [messages]) if ids else None)

    @torch.no_grad()
    def memorize_many(self, histories: Sequence[History]) -> None:
        """One base state per history, written in batches of about `memorize_batch_tokens` tokens."""
        self.reset()
        if len({h.context_id for h in histories}) != len(histories):
            raise ValueError("memorize_many got two histories with the same context id")
        encoded = [self._history_tokens(h) for h in histories]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths share a batch
        states: list[MemoryState] = []
        for batch in _token_batches([len(encoded[i][0]) for i in order], self.memorize_batch_tokens):
            chosen = [order[k] for k in batch]
            states.append(self._write(*([encoded[i][part] for i in chosen] for part in range(3))))
        self._keep(MemoryState.cat(states), {histories[i].context_id: row for row, i in enumerate(order)})

    def _keep(self, state: MemoryState | None, rows: dict[str, int] | None = None) -> None:
        """Make `state` (and, for several histories, each context's row of it) the base every
        question starts from; the model's own state is emptied and the question is read, not written."""
        self.backend.base_state, self.backend.base_rows = state, rows
        self.memory_model.reset_state()
        self.memorized = True
        self._update_prompt_writes()

    def _write_by_message(self, ids: list[int], segments: list[int], messages: list[int]) -> MemoryState:
        """One history (batch 1) written message by message, the state carried: what feeding a
        conversation one session at a time gives (`deltamem_sessions`), here in one process."""
        device = next(self.memory_model.parameters()).device
        self.memory_model.reset_state()
        for span in message_spans(messages):
            part = torch.tensor([ids[span]], dtype=torch.long, device=device)  # (1, T_message)
            segs = torch.tensor([segments[span]], dtype=torch.long, device=device)
            self.memory_model.write_history(
                part, None, segs if self.backend.wants_segments else None, self.write_chunk_size
            )
        return self._final_state(1, device)

    def memory_keys(self, queries):
        return [q.context_id for q in queries] if self.backend.base_rows is not None else None

    def _history_tokens(self, history: History) -> tuple[list[int], list[int], list[int]]:
        """(token ids, SSW segment ids, message ids) of a history rendered as one chat."""
        ids, message_ids, sentence_ids = self.builder.write_part([], list(history.messages))
        segments = message_ids if self.memory_model.memory_config.segment_unit == "message" else sentence_ids
        return ids, segments, message_ids

    def _write(self, histories: list[list[int]], segments: list[list[int]], messages: list[list[int]]) -> MemoryState:
        """Write right-padded histories (B rows) from a fresh state; their final states (batch B).
        An empty history leaves its row at zero. Under `write_chunks=messages` each row is written
        alone, one write call per message (split further at `write_chunk_size`)."""
        if self.write_chunks == "messages":
            return MemoryState.cat([self._write_by_message(h, s, m) for h, s, m in zip(histories, segments, messages)])
        device = next(self.memory_model.parameters()).device
        width = max(1, max(len(h) for h in histories))
        ids = torch.full((len(histories), width), self.decoder.pad_id, dtype=torch.long)
        mask = torch.zeros(len(histories), width, dtype=torch.long)
        segs = torch.full((len(histories), width), -1, dtype=torch.long)
        for row, (h, s) in enumerate(zip(histories, segments)):
            ids[row, : len(h)] = torch.tensor(h, dtype=torch.long)
            mask[row, : len(h)] = 1
            segs[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        self.memory_model.reset_state()
        self.memory_model.write_history(
            ids.to(device),
            mask.to(device),
            segs.to(device) if self.backend.wants_segments else None,
            self.write_chunk_size,
        )
        return self._final_state(len(histories), device)

    def _final_state(self, rows: int, device: torch.device) -> MemoryState:
        state = self.memory_model.get_state().clone()
        if state.batch_size is None:  # nothing written anywhere: explicit zeros, so states stack
            config = self.memory_model.memory_config
            zeros = torch.zeros(rows, config.num_state_heads, config.rank, config.rank, device=device)
            state = MemoryState({i: zeros.clone() for i in state.layers})
        return state

    def answer(self, queries):
        self._update_prompt_writes()
        return super().answer(queries)

    def reset(self) -> None:
        super().reset()
        self.backend.base_state = None
        self.backend.base_rows = None
        self.memory_model.reset_state()
        self.memorized = False
        self._update_prompt_writes()

    def cost(self) -> dict[str, Any]:
        summary = self.memory_model.parameter_summary()
        return {"extra_trainable_params": summary.trainable, "adapter_sha256": adapter_sha256(self.adapter)}

    def encode(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
        """Prompt ids; under SSW, per-token message (or sentence) ids of the prompt's messages."""
        ids = self.decoder.encode(messages)
        if not self.backend.wants_segments:
            return ids, [-1] * len(ids)
        system = [m for m in messages[:1] if m["role"] == "system"]
        _, message_ids, sentence_ids = self.builder.write_part(system, list(messages[len(system) :]))
        segments = message_ids if self.memory_model.memory_config.segment_unit == "message" else sentence_ids
        return ids, (segments + [-1] * len(ids))[: len(ids)]

    def _update_prompt_writes(self) -> None:
        write = {"auto": not self.memorized, "always": True, "never": False}[self.prompt_writes]
        if write != self.backend.write_prompt:
            self.decoder.forget_prefix()  # a kept prefix was computed under the other write mode
        self.backend.write_prompt = write


def message_spans(message_ids: Sequence[int]) -> list[slice]:
    """Consecutive token runs of one message each (the template's preamble counts as the first's)."""
    starts = [t for t in range(len(message_ids)) if t == 0 or message_ids[t] != message_ids[t - 1]]
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [len(message_ids)])]


def _token_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive index runs over ascending `lengths` whose padded size (rows × longest) stays
    within `budget` tokens; a row longer than the budget goes alone."""
    batches: list[list[int]] = []
    for k, length in enumerate(lengths):
        if batches and (len(batches[-1]) + 1) * max(1, length) <= budget:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches
