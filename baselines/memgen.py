"""MemGen at small scale: a memory weaver turns the history into latent tokens; a memory trigger
decides where the frozen backbone reads them.

Config `method=memgen`. After MemGen (Zhang et al., 2025, arXiv 2509.24704):

* **Memory weaver** (`MemoryWeaver`): a small Perceiver-style module. `num_latents` learned
  queries attend (`weaver_layers` pre-norm transformer-decoder blocks of width `weaver_dim`) to the
  frozen backbone's hidden states of the rendered history (`weaver_layer`, default the last, run in
  window-sized chunks) and are projected into the backbone's input-embedding space, RMS-normalised
  to the embedding table's RMS so they sit where token embeddings do.
* **Memory trigger** (`MemoryTrigger`): an MLP on the backbone's last hidden state at a candidate
  point, firing when its sigmoid exceeds `threshold` (`trigger: learned`), or `always` / `never`.
  Candidates are the end of the prompt (after the generation prompt: the latents open the
  assistant's turn) and, with `decode_triggers: true`, each generated token that ends in
  punctuation (up to `max_insertions` insertions per answer).
* **Insertion** (`MemGenBackend`): where the trigger fires, the latents are run through the backbone
  as `inputs_embeds` right after the token that triggered, extending the KV cache; the logits the
  decoder samples from are then those after the last latent. The decoder's prefix sharing is kept:
  insertion happens after the shared prefix and the per-row tail, and the backend keeps its own
  attention mask (the decoder's columns plus the latent columns, 0 in rows whose trigger did not
  fire) and per-row position offsets (+`num_latents` per insertion) that it applies to every later
  decode call. Rows whose trigger does not fire get exactly the frozen backbone's logits.
* **Training** (`fit(episodes)`): backbone frozen; per step `fit_batch_size` episodes: history →
  weaver → latents, loss = cross-entropy of the answer (template tokens through end-of-turn) given
  `[system + question + generation prompt, latents]`. The trigger is trained alongside with a binary
  cross-entropy whose label says whether the latents lowered that answer loss by more than
  `trigger_margin` (one extra no-latent forward per episode). Training runs at construction when
  `episodes` and `fit_steps > 0` are given (`save_to` then writes a checkpoint; a later run with the
  same `save_to` and `fit_steps` loads it instead of fitting again), or the weights come from
  `checkpoint` (`save`).
  `memorize` only runs the weaver.

What differs from the paper: the paper's weaver is a LoRA-adapted copy of the reasoning LLM that
reads the reasoner's *ongoing* context and stores experience in its weights; ours is a small
cross-attention module reading a *given history* (the conversational-memory setting of this
harness), so the latents carry that history. The paper trains the trigger with reinforcement
learning (reward for task success with a penalty on invocations) and the weaver with SFT or GRPO
on agent trajectories; ours trains both with supervised losses on synthetic chats (no RL), and by
default triggers only at the end of the prompt (punctuation triggers are optional and reuse the
prompt-end trigger). Scale: a few million parameters, not a second LLM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.context2lora import history_token_ids, seeded
from deltamem.episodes import EpisodeBuilder
from evals.chat_method import ChatModelMethod
from evals.conditions import MEMORY_PROMPTS
from evals.decoding import DecoderBackend, cache_kwargs, returned_cache
from evals.methods import History

TRIGGERS = ("learned", "always", "never")
PUNCTUATION = tuple(".,;:!?\n")
CHECKPOINT_WEIGHTS = "memgen.safetensors"
CHECKPOINT_CONFIG = "memgen_config.json"


class MemoryWeaver(nn.Module):
    """History hidden states (1, N, H) → `num_latents` vectors in the input-embedding space (L, H)."""

    def __init__(self, hidden: int, dim: int, num_latents: int, layers: int, heads: int, embed_rms: float):
        super().__init__()
        self.inp = nn.Linear(hidden, dim)
        self.queries = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        block = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(block, layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, hidden)
        self.register_buffer("embed_rms", torch.tensor(float(embed_rms)))

    def forward(self, states: Tensor) -> Tensor:
        x = self.blocks(self.queries[None], self.inp(states))
        z = self.out(self.norm(x))[0]
        return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6) * self.embed_rms


class MemoryTrigger(nn.Module):
    """Hidden state (B, H) → logit of "insert memory here" (B,)."""

    def __init__(self, hidden: int, inner: int, bias: float = 2.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, 1))
        nn.init.constant_(self.net[-1].bias, bias)  # untrained: fires (sigmoid(2) = 0.88)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)[..., 0]


class MemGenBackend(DecoderBackend):
    """Forward calls that insert latent tokens after the prompt (and punctuation) where the trigger fires."""

    graph_safe = False  # a step may insert latent tokens (the trigger decides on the host)

    def __init__(self, model: Any, method: "MemGen"):
        super().__init__(model)
        self.method = method
        self.latents: Tensor | None = None  # (L, H) in the backbone's dtype; None: behave as the backbone
        self.punctuation: Tensor | None = None  # token ids ending in punctuation (decode triggers)
        self.inserted = 0  # rows × insertions, for inspection
        self._mask: Tensor | None = None
        self._offset: Tensor | None = None
        self._count: Tensor | None = None

    def forward(self, input_ids, attention_mask, position_ids, cache, phase, segment_ids=None):
        if phase == "prefix" or self.latents is None:
            return super().forward(input_ids, attention_mask, position_ids, cache, phase, segment_ids)
        batch = input_ids.shape[0]
        if phase == "prompt":
            self._mask = attention_mask
            self._offset = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
            self._count = torch.zeros_like(self._offset)
        else:  # decode: the decoder appended one column for this token; latent columns stay in ours
            self._mask = torch.cat([self._mask, attention_mask[:, -1:]], dim=1)
            position_ids = position_ids + self._offset[:, None]
        out = self.model(
            input_ids=input_ids,
            attention_mask=self._mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=True,
            **cache_kwargs(self.model, cache),
        )
        logits, cache = out.logits[:, -1].float(), returned_cache(out)
        if phase == "prompt":
            candidates = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
        elif self.method.decode_triggers and self.punctuation is not None:
            candidates = torch.isin(input_ids[:, -1], self.punctuation)
        else:
            return logits, cache
        candidates &= self._count < self.method.max_insertions
        if not bool(candidates.any()):
            return logits, cache
        fire = candidates & self.method.trigger_decision(out.hidden_states[-1][:, -1].float())
        if not bool(fire.any()):
            return logits, cache
        return self._insert(fire, logits, cache, position_ids[:, -1])

    def _insert(self, fire: Tensor, logits: Tensor, cache: Any, last_position: Tensor) -> tuple[Tensor, Any]:
        """Run the latents after the current token in every row; only firing rows see them (mask)."""
        latents = self.latents
        batch, length = fire.shape[0], latents.shape[0]
        block = fire.long()[:, None].expand(batch, length)
        self._mask = torch.cat([self._mask, block], dim=1)
        positions = last_position[:, None] + 1 + torch.arange(length, device=fire.device)[None]
        out = self.model(
            inputs_embeds=latents[None].expand(batch, -1, -1),
            attention_mask=self._mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **cache_kwargs(self.model, cache),
        )
        self._offset = self._offset + length * fire.long()
        self._count = self._count + fire.long()
        self.inserted += int(fire.sum())
        return torch.where(fire[:, None], out.logits[:, -1].float(), logits), returned_cache(out)


class MemGen(ChatModelMethod):
    """Weaver latents from the memorised history, inserted where the trigger fires."""

    name = "memgen"
    conditions: tuple[str, ...] = MEMORY_PROMPTS

    def __init__(
        self,
        loaded: Any,
        num_latents: int = 8,
        weaver_dim: int = 256,
        weaver_layers: int = 2,
        weaver_heads: int = 4,
        weaver_layer: int = -1,
        trigger: str = "learned",
        threshold: float = 0.5,
        trigger_hidden: int = 64,
        decode_triggers: bool = False,
        max_insertions: int = 1,
        checkpoint: str | None = None,
        save_to: str | None = None,
        episodes: Sequence[dict] | None = None,
        fit_steps: int = 0,
        fit_batch_size: int = 1,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        trigger_weight: float = 1.0,
        trigger_margin: float = 0.0,
        max_history_tokens: int = 8192,
        seed: int = 0,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        self.num_latents, self.weaver_layer = int(num_latents), int(weaver_layer)
        self.trigger, self.threshold = trigger, float(threshold)
        self.decode_triggers, self.max_insertions = bool(decode_triggers), int(max_insertions)
        self.fit_batch_size, self.lr, self.weight_decay = int(fit_batch_size), float(lr), float(weight_decay)
        self.trigger_weight, self.trigger_margin = float(trigger_weight), float(trigger_margin)
        self.max_history_tokens, self.seed = int(max_history_tokens), int(seed)
        super().__init__(loaded, batch_size, max_context_tokens, prefill_chunk, name or "memgen")
        self.builder = EpisodeBuilder(self.tokenizer, chat_template_kwargs=self.template_kwargs)
        self.device = next(self.model.parameters()).device
        embedding = self.model.get_input_embeddings().weight
        hidden = embedding.shape[1]
        self.dims = {
            "num_latents": self.num_latents,
            "weaver_dim": int(weaver_dim),
            "weaver_layers": int(weaver_layers),
            "weaver_heads": int(weaver_heads),
            "trigger_hidden": int(trigger_hidden),
        }
        with seeded(self.seed, self.device):
            embed_rms = float(embedding.float().pow(2).mean().sqrt())
            self.weaver = MemoryWeaver(
                hidden, int(weaver_dim), self.num_latents, int(weaver_layers), int(weaver_heads), embed_rms
            ).to(self.device)
            self.trigger_net = MemoryTrigger(hidden, int(trigger_hidden)).to(self.device)
        self.weaver.eval()
        self.trigger_net.eval()
        if self.decode_triggers:
            self.backend.punctuation = self._punctuation_ids()
        self.losses: list[float] = []
        self.fit_steps_done = 0
        resumable = save_to is not None and (Path(save_to) / CHECKPOINT_WEIGHTS).is_file()
        if checkpoint is not None:
            self.load(checkpoint)
        elif episodes is not None and int(fit_steps) > 0 and resumable and self._saved_steps(save_to) == fit_steps:
            self.load(save_to)  # a resumed run: the weights this run's fit saved, not a second fit
        elif episodes is not None and int(fit_steps) > 0:
            self.fit(episodes, int(fit_steps))
            if save_to is not None:
                self.save(save_to)

    def make_backend(self) -> MemGenBackend:
        return MemGenBackend(self.model, self)

    @property
    def backend(self) -> MemGenBackend:
        return self.decoder.backend  # type: ignore[return-value]

    # ----------------------------------------------------------------- the interface
    @torch.no_grad()
    def memorize(self, history: History) -> None:
        self.reset()
        ids = history_token_ids(self.builder, history.messages)
        if ids:
            latents = self.weaver(self.history_states(ids))
            self.backend.latents = latents.to(self.model.get_input_embeddings().weight.dtype)

    def reset(self) -> None:
        super().reset()
        self.backend.latents = None

    def cost(self) -> dict[str, Any]:
        return {
            "extra_trainable_params": self.weaver_params() + self.trigger_params(),
            "weaver_params": self.weaver_params(),
            "trigger_params": self.trigger_params(),
            "memorize_train_steps": 0,
            "fit_steps": self.fit_steps_done,
            "num_latents": self.num_latents,
            "trigger": self.trigger,
        }

    def weaver_params(self) -> int:
        return sum(p.numel() for p in self.weaver.parameters())

    def trigger_params(self) -> int:
        return sum(p.numel() for p in self.trigger_net.parameters())

    # ----------------------------------------------------------------- pieces
    def trigger_decision(self, hidden: Tensor) -> Tensor:
        """Per row: insert memory here? (B,) bool."""
        if self.trigger == "always":
            return torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        if self.trigger == "never":
            return torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        with torch.no_grad():
            return torch.sigmoid(self.trigger_net(hidden)) > self.threshold

    @torch.no_grad()
    def history_states(self, ids: list[int]) -> Tensor:
        """The frozen backbone's hidden states (layer `weaver_layer`) of the history's last
        `max_history_tokens` tokens, run in window-sized chunks: (1, N, H) fp32."""
        ids = ids[-self.max_history_tokens :]
        window = self.decoder.max_context_tokens
        states = []
        for start in range(0, len(ids), window):
            chunk = torch.tensor([ids[start : start + window]], device=self.device)
            out = self.model(input_ids=chunk, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            states.append(out.hidden_states[self.weaver_layer][0].float())
        return torch.cat(states)[None]

    def _punctuation_ids(self) -> Tensor:
        vocab = self.model.get_output_embeddings().weight.shape[0]
        found = [
            i
            for i in range(min(vocab, len(self.tokenizer)))
            if self.tokenizer.decode([i]).rstrip(" ").endswith(PUNCTUATION)
        ]
        return torch.tensor(found, dtype=torch.long, device=self.device)

    def episode_parts(self, record: dict) -> tuple[list[int], list[int], list[int]]:
        """(history ids, prompt ids ending with the generation prompt, answer ids through end-of-turn)."""
        system, history, last = self.builder.split(record["messages"])
        prompt_text = self.builder.render(system + [last["question"]], generation_prompt=True)
        full_text = self.builder.render(system + [last["question"], last["answer"]])
        prompt, full = self.builder.tokenize(prompt_text)[0], self.builder.tokenize(full_text)[0]
        if full[: len(prompt)] == prompt:
            answer = full[len(prompt) :]
        elif full_text.startswith(prompt_text):  # tokens merge across the boundary: tokenize the rest alone
            answer = self.builder.tokenize(full_text[len(prompt_text) :])[0]
        else:
            raise ValueError("the chat template does not render the answer after the generation prompt")
        end = self.builder.end_of_turn
        if end in answer:
            answer = answer[: answer.index(end) + 1]
        return history_token_ids(self.builder, history), prompt, answer

    # ----------------------------------------------------------------- training
    def episode_loss(self, record: dict) -> tuple[Tensor, Tensor | None]:
        """(answer CE given the latents, trigger BCE or None) for one episode."""
        history, prompt, answer = self.episode_parts(record)
        embed = self.model.get_input_embeddings()
        dtype = embed.weight.dtype
        latents = self.weaver(self.history_states(history)).to(dtype)  # (L, H), grad to the weaver
        prompt_t = torch.tensor(prompt, device=self.device)
        answer_t = torch.tensor(answer, device=self.device)
        inputs = torch.cat([embed(prompt_t), latents, embed(answer_t)])[None]
        out = self.model(inputs_embeds=inputs, use_cache=False, logits_to_keep=len(answer) + 1)
        loss = F.cross_entropy(out.logits[0, :-1].float(), answer_t)
        if self.trigger != "learned" or not self.trigger_weight:
            return loss, None
        with torch.no_grad():
            plain = self.model(
                input_ids=torch.cat([prompt_t, answer_t])[None],
                use_cache=False,
                output_hidden_states=True,
                logits_to_keep=len(answer) + 1,
            )
            plain_loss = F.cross_entropy(plain.logits[0, :-1].float(), answer_t)
            hidden = plain.hidden_states[-1][0, len(prompt) - 1].float()
            target = (loss.detach() < plain_loss - self.trigger_margin).float()
        trigger_loss = F.binary_cross_entropy_with_logits(self.trigger_net(hidden[None])[0], target)
        return loss, trigger_loss

    def fit(self, episodes: Sequence[dict], steps: int) -> list[float]:
        """Train the weaver (+ trigger) on `steps` × `fit_batch_size` episodes drawn with the seeded generator."""
        params = list(self.weaver.parameters()) + list(self.trigger_net.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        losses = []
        self.weaver.train()
        self.trigger_net.train()
        try:
            with torch.enable_grad():
                for _ in range(int(steps)):
                    optimizer.zero_grad(set_to_none=True)
                    total = 0.0
                    for index in torch.randint(len(episodes), (self.fit_batch_size,), generator=generator).tolist():
                        loss, trigger_loss = self.episode_loss(episodes[index])
                        if trigger_loss is not None:
                            loss = loss + self.trigger_weight * trigger_loss
                        (loss / self.fit_batch_size).backward()
                        total += float(loss.detach()) / self.fit_batch_size
                    optimizer.step()
                    losses.append(total)
        finally:
            self.weaver.eval()
            self.trigger_net.eval()
            optimizer.zero_grad(set_to_none=True)
        self.fit_steps_done += int(steps)
        self.losses = losses
        return losses

    # ----------------------------------------------------------------- checkpoints
    def save(self, folder: str | Path) -> None:
        """Write the weaver and trigger weights and their dimensions (reload with `checkpoint=folder`)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {f"weaver.{k}": v for k, v in self.weaver.state_dict().items()}
        state.update({f"trigger.{k}": v for k, v in self.trigger_net.state_dict().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / CHECKPOINT_WEIGHTS))
        config = {**self.dims, "weaver_layer": self.weaver_layer, "fit_steps": self.fit_steps_done}
        (folder / CHECKPOINT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    @staticmethod
    def _saved_steps(folder: str | Path) -> int | None:
        path = Path(folder) / CHECKPOINT_CONFIG
        return int(json.loads(path.read_text()).get("fit_steps", -1)) if path.is_file() else None

    def load(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CHECKPOINT_WEIGHTS).is_file():
            raise FileNotFoundError(f"{folder} holds no {CHECKPOINT_WEIGHTS} (write one with MemGen.save)")
        saved = json.loads((folder / CHECKPOINT_CONFIG).read_text())
        mismatch = {k: (saved.get(k), v) for k, v in self.dims.items() if saved.get(k) != v}
        if mismatch:
            raise ValueError(f"checkpoint {folder} was saved with other dimensions (saved, configured): {mismatch}")
        state = load_file(str(folder / CHECKPOINT_WEIGHTS), device=str(self.device))
        self.weaver.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("weaver.")})
        self.trigger_net.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("trigger.")})
        self.fit_steps_done = int(saved.get("fit_steps", 0))
