"""LLMLingua-2: the history compressed once per context by a token classifier, the compression in every prompt.

`memorize` hands the history to the `llmlingua` package's LLMLingua-2 compressor
(`PromptCompressor(model_name, device_map, use_llmlingua2=True)`, `compress_prompt_llmlingua2`): one
context string per history message (``User: `` / ``Assistant: `` labels when the history mixes
roles), each cut into ≤512-token chunks, every word scored by the classifier's "keep" probability,
and the words above the chunk's percentile threshold kept. The budget is either `rate` (kept
fraction of tokens) or `target_token` (a token count; overrides `rate`). `force_tokens` are always
kept (``"\\n"`` keeps LoCoMo's line structure). The prompt is then the last user message prefixed
with ``Compressed history of the earlier conversation:\\n<compressed>\\n\\n`` — the same for every
question of a context, so the decoder runs it once.

Choices, stated:
* Budget unit: llmlingua counts tokens with tiktoken's GPT-3.5 encoding, which downloads its BPE
  file at construction (impossible offline). With `budget_tokenizer: backbone` (the default) the
  compressor counts **backbone tokens** instead, which is also what a prompt costs here; this needs
  a subclass of `PromptCompressor` whose `__init__` repeats upstream's attribute setup (llmlingua
  0.2.2) with the backbone tokenizer in place of tiktoken. `budget_tokenizer: tiktoken` keeps
  upstream's counting (needs network or tiktoken's cache).
* `target_token` is enforced, in backbone tokens: llmlingua's percentile threshold only approximates it, so when the
  compressed history (re-tokenised with the backbone tokenizer) is longer, compression is re-run
  with the target scaled down by the overshoot (`budget_retries` times), then the oldest tokens are
  cut (counted in `cost()["hard_cut_contexts"]`).
* llmlingua picks its word-merging rules from the model *name*: the folder or hub id must contain
  ``xlm-roberta-large`` or ``bert-base-multilingual-cased`` (as the released models do).
* `init_llmlingua2` seeds Python, NumPy and torch globally and sets cuDNN to deterministic, and each
  compression draws from torch's RNG (its DataLoader); RNG states and cuDNN flags are restored after
  loading and after every compression, so the compressor leaves no trace on the process.
* The compressor loads lazily, at the first `memorize`.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from baselines.bm25_rag import labelled, render_message, with_block
from evals.chat_method import ChatModelMethod
from evals.conditions import MEMORY_ONLY
from evals.methods import History, Query

DEFAULT_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
SUPPORTED_NAMES = ("xlm-roberta-large", "bert-base-multilingual-cased")  # llmlingua dispatches on these
BLOCK_HEADER = "Compressed history of the earlier conversation:"


class BackboneTokenCounter:
    """The `encode` llmlingua calls to count tokens, answered with the backbone tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@contextmanager
def _preserved_global_state() -> Iterator[None]:
    """Restore Python/NumPy/torch RNG states and cuDNN flags that llmlingua's `seed_everything` changes."""
    import numpy as np

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    deterministic, benchmark = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark


def load_compressor(
    model_name: str, device_map: str, counter: Any | None, max_batch_size: int = 50, max_force_token: int = 100
) -> Any:
    """An LLMLingua-2 `PromptCompressor`; `counter` (an object with `encode`) replaces tiktoken when given."""
    try:
        from llmlingua import PromptCompressor
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("method=llmlingua2 needs the `llmlingua` package: pip install llmlingua") from error

    class _Compressor(PromptCompressor):
        """Upstream's constructor (llmlingua 0.2.2) with the token counter injected instead of tiktoken."""

        def __init__(self) -> None:
            self.model_name = model_name
            self.use_llmlingua2 = True
            self.retrieval_model = None
            self.retrieval_model_name = None
            self.open_api_config = {}
            self.cache_bos_num = 10
            self.prefix_bos_num = 100
            self.oai_tokenizer = counter
            self.load_model(model_name, device_map, {})
            self.init_llmlingua2(max_batch_size=max_batch_size, max_force_token=max_force_token)

    try:
        with _preserved_global_state():
            if counter is None:
                return PromptCompressor(
                    model_name=model_name,
                    device_map=device_map,
                    use_llmlingua2=True,
                    llmlingua2_config={"max_batch_size": max_batch_size, "max_force_token": max_force_token},
                )
            return _Compressor()
    except OSError as error:
        raise RuntimeError(
            f"cannot load the LLMLingua-2 compressor {model_name!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). Offline, pass method.model_name=/local/folder holding a saved "
            f"token classifier and its tokenizer; the folder name must contain one of {SUPPORTED_NAMES}."
        ) from error


class LLMLingua2(ChatModelMethod):
    """The frozen backbone reading an LLMLingua-2 compression of the history (config `method=llmlingua2`)."""

    name = "llmlingua2"
    conditions: tuple[str, ...] = (MEMORY_ONLY.name,)

    def __init__(
        self,
        loaded: Any,
        model_name: str = DEFAULT_MODEL,
        rate: float = 0.33,
        target_token: int | None = None,
        device_map: str = "auto",
        force_tokens: Sequence[str] = ("\n", "?"),
        use_context_level_filter: bool = False,
        budget_tokenizer: str = "backbone",
        budget_retries: int = 3,
        max_batch_size: int = 50,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        if not any(s in str(model_name) for s in SUPPORTED_NAMES):
            raise ValueError(
                f"llmlingua chooses its word rules from the model name; {model_name!r} contains none of "
                f"{SUPPORTED_NAMES} (name a local folder accordingly)"
            )
        if not 0.0 < float(rate) <= 1.0:
            raise ValueError(f"rate must be in (0, 1]: got {rate}")
        if target_token is not None and int(target_token) < 1:
            raise ValueError(f"target_token must be positive or null: got {target_token}")
        if budget_tokenizer not in ("backbone", "tiktoken"):
            raise ValueError(f"budget_tokenizer must be 'backbone' or 'tiktoken': got {budget_tokenizer!r}")
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name)
        self.model_name = str(model_name)
        self.rate = float(rate)
        self.target_token = None if target_token is None else int(target_token)
        if device_map == "auto":
            device_map = "cuda" if torch.cuda.is_available() else "cpu"
        self.device_map = str(device_map)
        self.force_tokens = [str(t) for t in force_tokens]
        self.use_context_level_filter = bool(use_context_level_filter)
        self.budget_tokenizer = budget_tokenizer
        self.budget_retries = int(budget_retries)
        self.max_batch_size = int(max_batch_size)
        self.compressor: Any = None
        self.compressed: str = ""
        self.last: dict[str, Any] = {}
        self._totals = {"contexts": 0, "original_tokens": 0, "compressed_tokens": 0, "hard_cut_contexts": 0}

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.decoder.forget_prefix()
        self.compressed = self.compress(history)

    def reset(self) -> None:
        super().reset()
        self.compressed, self.last = "", {}

    def cost(self) -> dict[str, Any]:
        t = self._totals
        n = max(1, t["contexts"])
        return {
            "extra_trainable_params": 0,
            "compressor": self.model_name,
            "compressor_params": None if self.compressor is None else _count(self.compressor.model),
            "rate": self.rate,
            "target_token": self.target_token,
            "original_tokens_mean": round(t["original_tokens"] / n, 2),
            "compressed_tokens_mean": round(t["compressed_tokens"] / n, 2),
            "compression_rate": round(t["compressed_tokens"] / t["original_tokens"], 4)
            if t["original_tokens"]
            else None,
            "hard_cut_contexts": t["hard_cut_contexts"],
        }

    def prompt_messages(self, query: Query) -> list[dict[str, str]]:
        if not self.compressed.strip():
            return query.messages
        return with_block(query.messages, f"{BLOCK_HEADER}\n{self.compressed}")

    # ----------------------------------------------------------------- compression
    def count(self, text: str) -> int:
        """Backbone tokens of `text` (what the prompt pays)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def ensure_compressor(self) -> Any:
        if self.compressor is None:
            counter = BackboneTokenCounter(self.tokenizer) if self.budget_tokenizer == "backbone" else None
            self.compressor = load_compressor(self.model_name, self.device_map, counter, self.max_batch_size)
        return self.compressor

    def compress(self, history: History) -> str:
        """The history compressed to `rate` / `target_token` (see the module docstring); records `self.last`."""
        with_role = labelled(history.messages)
        context = [render_message(m, with_role) for m in history.messages if m["content"].strip()]
        original = self.count("\n\n".join(context))
        text, cut = "", False
        if context:
            compressor = self.ensure_compressor()
            target = self.target_token
            for _ in range(self.budget_retries + 1):
                text = self._run(compressor, context, target)
                used = self.count(text)
                if self.target_token is None or used <= self.target_token:
                    break
                target = max(1, int(target * self.target_token / used) - 1)  # shrink by the overshoot
            if self.target_token is not None and self.count(text) > self.target_token:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                text = self.tokenizer.decode(ids[len(ids) - self.target_token :], skip_special_tokens=True)
                while self.count(text) > self.target_token:  # re-tokenisation may merge differently
                    text = text[1:]
                cut = True
        compressed = self.count(text)
        self.last = {"original_tokens": original, "compressed_tokens": compressed, "hard_cut": cut}
        t = self._totals
        t["contexts"] += 1
        t["original_tokens"] += original
        t["compressed_tokens"] += compressed
        t["hard_cut_contexts"] += int(cut)
        return text

    def _run(self, compressor: Any, context: list[str], target: int | None) -> str:
        with torch.no_grad(), _preserved_global_state():
            result = compressor.compress_prompt_llmlingua2(
                list(context),
                rate=self.rate,
                target_token=-1 if target is None else int(target),
                use_context_level_filter=self.use_context_level_filter,
                force_tokens=list(self.force_tokens),
            )
        return str(result["compressed_prompt"])


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
