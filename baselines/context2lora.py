"""Context2LoRA: a LoRA trained on a context's history, answering without the history in the prompt.

Config `method=context2lora`. The paper's parametric baseline, in two variants (`train_on`):

* `history` (default) — **one LoRA per context.** `memorize(history)` restores the LoRA to its
  initial state (A random, B = 0: the identity), renders the history with the backbone's chat
  template, cuts the tokens into `max_length` chunks and trains the LoRA with the causal-LM loss on
  every token (AdamW, `steps` steps of `train_batch_size` chunks, seeded order). Questions are then
  answered with the LoRA active and the history absent from the prompt (`memory_only`; under
  `recent_window` the last few messages stay too). `reset()` restores the identity LoRA.
* `episodes` (`EpisodeLoRA`) — **one LoRA for all contexts**, trained once at construction on the
  training episodes (`episodes`, e.g. `SyntheticChats`; labels on the answer only, as δ-mem's read
  part; `episode_history: true` keeps the history in the training input, so the LoRA learns the
  task as full-context fine-tuning) and then written to `save_to` if given, or loaded from a folder
  written by `save_adapter` (`adapter`).
  It is then fixed: `memorize` keeps nothing, so it runs under every condition. It fits its
  training distribution and shows how far that carries to the benchmarks.

The LoRA (rank `rank`, `alpha`, `dropout`, on q/k/v/o projections by default) is injected into the
backbone's modules in place with `peft.inject_adapter_in_model`, so the backbone stays a plain
`*ForCausalLM` and the shared `ChatDecoder` / `DecoderBackend` drive it unchanged (a `PeftModel`
wrapper would hide the model's `cache` keyword from `evals.decoding.cache_kwargs`). The backbone's
own weights are never trained or modified; only `lora_` parameters change. One backbone holds one
Context2LoRA: load a fresh backbone per method instance.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from deltamem.episodes import IGNORE_INDEX, EpisodeBuilder, merge_same_role
from evals.chat_method import ChatModelMethod
from evals.conditions import ALL_CONDITIONS, MEMORY_PROMPTS
from evals.methods import History

TRAIN_ON = ("history", "episodes")
ADAPTER_WEIGHTS = "context2lora_adapter.safetensors"
ADAPTER_CONFIG = "context2lora_config.json"


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block under a forked RNG (CPU and, on CUDA, the model's device) seeded with `seed`."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def history_token_ids(builder: EpisodeBuilder, messages: Sequence[dict[str, str]]) -> list[int]:
    """The history rendered with the chat template (same-role turns merged), as token ids."""
    chat = merge_same_role(messages) if messages else []
    if not chat:
        return []
    return builder.tokenize(builder.render(chat))[0]


def lm_loss(model: Any, ids: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy over positions whose label is not IGNORE_INDEX."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


class Context2LoRA(ChatModelMethod):
    """A rank-`rank` LoRA trained on each history (`train_on="history"`) or once on episodes."""

    name = "context2lora"
    conditions: tuple[str, ...] = MEMORY_PROMPTS

    def __init__(
        self,
        loaded: Any,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        steps: int = 30,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_length: int = 512,
        train_batch_size: int = 4,
        seed: int = 0,
        train_on: str = "history",
        episodes: Sequence[dict] | None = None,
        episode_steps: int = 200,
        episode_history: bool = True,
        adapter: str | None = None,
        save_to: str | None = None,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
        model = loaded.model
        if any(isinstance(m, LoraLayer) for m in model.modules()):
            raise ValueError("this backbone already carries LoRA layers; load a fresh backbone per Context2LoRA")
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.target_modules = list(target_modules)
        self.steps, self.lr, self.weight_decay = int(steps), float(lr), float(weight_decay)
        self.max_length, self.train_batch_size, self.seed = int(max_length), int(train_batch_size), int(seed)
        self.train_on, self.episode_steps, self.episode_history = train_on, int(episode_steps), bool(episode_history)
        self.adapter = adapter
        device = next(model.parameters()).device
        lora_config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias="none",
        )
        with seeded(self.seed, device):
            inject_adapter_in_model(lora_config, model)
        self.lora_params: dict[str, torch.nn.Parameter] = {}
        for param_name, param in model.named_parameters():
            is_lora = "lora_" in param_name
            param.requires_grad_(is_lora)
            if is_lora:
                param.data = param.data.float()  # fp32 adapter on a half-precision backbone
                self.lora_params[param_name] = param
        if not self.lora_params:
            raise ValueError(f"no module of the backbone matches target_modules={self.target_modules}")
        self.dropouts = [m for n, m in model.named_modules() if "lora_dropout" in n]
        if train_on == "episodes":
            self.conditions = ALL_CONDITIONS  # a fixed fine-tuned backbone: every prompt layout applies
        default_name = "context2lora" if train_on == "history" else "episode_lora"
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name or default_name)
        self.builder = EpisodeBuilder(
            self.tokenizer, max_length=self.max_length, chat_template_kwargs=self.template_kwargs
        )
        self.losses: list[float] = []  # training losses of the last memorize / episode training
        self.episode_steps_done = 0
        if adapter is not None:
            self.load_adapter(adapter)
        elif train_on == "episodes":
            if episodes is None:
                raise ValueError("train_on=episodes needs `episodes` (a training source) or an `adapter` folder")
            self.train_on_episodes(episodes, self.episode_steps)
            if save_to is not None:
                self.save_adapter(save_to)
        self.base_state = self.lora_state()  # what reset() restores: the identity LoRA, or the trained one

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.reset()
        if self.train_on == "history":
            ids = history_token_ids(self.builder, history.messages)
            chunks = [ids[s : s + self.max_length] for s in range(0, len(ids), self.max_length)]
            sequences = [(c, c) for c in chunks if len(c) >= 2]
            self.losses = self._train(sequences, self.steps)
        self.decoder.forget_prefix()

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "base_state"):
            self.load_lora_state(self.base_state)

    def cost(self) -> dict[str, Any]:
        return {
            "extra_trainable_params": sum(p.numel() for p in self.lora_params.values()),
            "memorize_train_steps": self.steps if self.train_on == "history" else 0,
            "episode_train_steps": self.episode_steps_done,
            "train_on": self.train_on,
            "lora_rank": self.rank,
        }

    # ----------------------------------------------------------------- LoRA state
    def lora_state(self) -> dict[str, Tensor]:
        return {k: p.detach().clone() for k, p in self.lora_params.items()}

    @torch.no_grad()
    def load_lora_state(self, state: dict[str, Tensor]) -> None:
        for key, param in self.lora_params.items():
            param.copy_(state[key])

    def save_adapter(self, folder: str | Path) -> None:
        """Write the LoRA weights and their config (reload with `adapter=folder`)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.lora_state().items()}, str(folder / ADAPTER_WEIGHTS))
        config = {"rank": self.rank, "alpha": self.alpha, "target_modules": self.target_modules, **self.cost()}
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    def load_adapter(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"{folder} holds no {ADAPTER_WEIGHTS} (write one with Context2LoRA.save_adapter)")
        saved = json.loads((folder / ADAPTER_CONFIG).read_text())
        if saved["rank"] != self.rank or sorted(saved["target_modules"]) != sorted(self.target_modules):
            raise ValueError(
                f"adapter {folder} has rank {saved['rank']} on {saved['target_modules']}; configured "
                f"rank {self.rank} on {self.target_modules}"
            )
        state = load_file(str(folder / ADAPTER_WEIGHTS))
        if set(state) != set(self.lora_params):
            raise ValueError(f"adapter {folder} does not match this backbone's LoRA layers")
        self.load_lora_state(state)
        self.episode_steps_done = int(saved.get("episode_train_steps", 0))

    # ----------------------------------------------------------------- training
    def episode_sequence(self, record: dict) -> tuple[list[int], list[int]]:
        """(ids, labels) of one training episode: labels on the answer only, tail-truncated."""
        system, history, last = self.builder.split(record["messages"])
        context = system + history if self.episode_history else system
        ids, labels = self.builder.read_part(context, last["question"], last["answer"])
        keep = max(0, len(ids) - self.max_length)
        return ids[keep:], labels[keep:]

    def train_on_episodes(self, episodes: Sequence[dict], steps: int) -> list[float]:
        """Train the (shared) LoRA on `steps` batches of episodes drawn with the seeded generator."""
        generator = torch.Generator().manual_seed(self.seed)
        picks = torch.randint(len(episodes), (steps * self.train_batch_size,), generator=generator).tolist()
        sequences = [self.episode_sequence(episodes[i]) for i in picks]
        self.losses = self._train(sequences, steps, shuffle=False)
        self.episode_steps_done += steps
        self.decoder.forget_prefix()
        return self.losses

    def _train(self, sequences: list[tuple[list[int], list[int]]], steps: int, shuffle: bool = True) -> list[float]:
        """AdamW on the LoRA parameters; each step takes the next `train_batch_size` sequences."""
        if not sequences or steps <= 0:
            return []
        device = next(self.model.parameters()).device
        params = list(self.lora_params.values())
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        losses = []
        for module in self.dropouts:
            module.train()
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    batch = []
                    while len(batch) < min(self.train_batch_size, len(sequences)):
                        if not order:
                            order = (
                                torch.randperm(len(sequences), generator=generator).tolist()
                                if shuffle
                                else list(range(len(sequences)))
                            )
                        batch.append(sequences[order.pop(0)])
                    ids, labels, mask = _pad_batch(batch, self.decoder.pad_id, device)
                    loss = lm_loss(self.model, ids, labels, mask)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
        finally:
            for module in self.dropouts:
                module.eval()
            optimizer.zero_grad(set_to_none=True)
        return losses


class EpisodeLoRA(Context2LoRA):
    """Context2LoRA trained once on training episodes (or loaded from `adapter`), then fixed."""

    def __init__(self, loaded: Any, episodes: Sequence[dict] | None = None, adapter: str | None = None, **kwargs: Any):
        kwargs.setdefault("train_on", "episodes")
        super().__init__(loaded, episodes=episodes, adapter=adapter, **kwargs)


def _pad_batch(batch: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device) -> tuple[Tensor, ...]:
    """Right-padded ids, labels (IGNORE_INDEX on padding) and attention mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, (seq, lab) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
    return ids.to(device), labels.to(device), mask.to(device)
