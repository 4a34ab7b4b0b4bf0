"""MLP memory: an outside-channel memory mixed into the frozen backbone's next-token distribution.

Config `method=mlp_memory`. After MLP Memory (Wei et al., 2025: an MLP trained to imitate a kNN-LM
retriever) and kNN-LM (Khandelwal et al., 2020), built per context:

1. `memorize(history)` renders the history with the chat template and runs the frozen backbone
   over it once (in window-sized chunks, `output_hidden_states=True`), collecting a **datastore**
   of (final hidden state at position t → token t+1): the hidden state is the one the LM head
   reads (after the final norm).
2. `mode: mlp` (default) then trains a small **MLP** on the datastore's keys to imitate the kNN-LM
   distribution of each key (cross-entropy to the kNN target = KL up to a constant, plus
   `ce_weight` × cross-entropy to the true next token; AdamW, `steps` steps of `train_batch_size`
   keys, seeded). With `head: embedding` the MLP maps h to h + Δ(h) in hidden space and reuses the
   backbone's frozen (tied) output embedding as its vocabulary projection; Δ's last layer starts at
   zero, so an untrained MLP predicts exactly p_LM. `head: full` is a fresh hidden → vocab layer.
   `mode: knn` skips the MLP and queries the datastore directly.
3. At answer time the next-token distribution is p = (1-λ) p_LM + λ p_mem, where p_mem is the MLP's
   softmax or p_kNN(y) ∝ Σ_{k nearest keys with token y} exp(-d/T), d the squared L2 distance
   divided by the hidden size (a scale-free temperature T across backbones). The backend returns
   log p as the "logits" (argmax and softmax over log p are those of p); the prefix pass is the
   plain backbone (its logits are not used). With λ = 0 or no datastore the forward is exactly the
   frozen backbone's.

What differs from MLP Memory: no pre-training on a corpus-scale datastore: the MLP is trained from
scratch (or from the LM's own head, `head: embedding`) per context, on that context's datastore,
with the key itself among its neighbours (`exclude_self: false`: a fact stated once must reach the
target), and it reads the LM head's input rather than an intermediate layer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.context2lora import history_token_ids, seeded
from deltamem.episodes import EpisodeBuilder
from evals.chat_method import ChatModelMethod
from evals.conditions import MEMORY_PROMPTS
from evals.decoding import DecoderBackend, cache_kwargs, returned_cache
from evals.methods import History

MODES = ("mlp", "knn")
HEADS = ("embedding", "full")


def mix_log_probs(log_lm: Tensor, log_mem: Tensor, lam: float) -> Tensor:
    """log((1-λ) p_LM + λ p_mem), computed in log space."""
    if lam >= 1.0:
        return log_mem
    return torch.logaddexp(log_lm + math.log1p(-lam), log_mem + math.log(lam))


class MixingBackend(DecoderBackend):
    """Forward calls whose last-position output is the mixed log-distribution (prompt and decode phases)."""

    graph_safe = False  # its forward takes no cache_position and is not tested over a static cache

    def __init__(self, model: Any, lam: float):
        super().__init__(model)
        self.lam = float(lam)
        self.memory_log_probs: Callable[[Tensor], Tensor] | None = None  # (B, H) fp32 → (B, V) log-probs

    def forward(self, input_ids, attention_mask, position_ids, cache, phase, segment_ids=None):
        if phase == "prefix" or self.memory_log_probs is None or self.lam <= 0.0:
            return super().forward(input_ids, attention_mask, position_ids, cache, phase, segment_ids)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=True,
            **cache_kwargs(self.model, cache),
        )
        log_lm = out.logits[:, -1].float().log_softmax(-1)
        log_mem = self.memory_log_probs(out.hidden_states[-1][:, -1].float())
        return mix_log_probs(log_lm, log_mem, self.lam), returned_cache(out)


class MemoryMLP(nn.Module):
    """hidden → logits: h + Δ(h) through the frozen output embedding (`embedding`) or a vocab layer (`full`)."""

    def __init__(self, hidden: int, inner: int, vocab: int, head: str):
        super().__init__()
        self.head = head
        self.up = nn.Linear(hidden, inner)
        self.down = nn.Linear(inner, hidden if head == "embedding" else vocab)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, h: Tensor, output_embedding: nn.Module) -> Tensor:
        z = self.down(F.gelu(self.up(h)))
        if self.head == "full":
            return z
        weight = output_embedding.weight
        return output_embedding((h + z).to(weight.dtype)).float()


class Datastore:
    """Keys (N, H) fp32 and next-token values (N,), with kNN distributions over them."""

    def __init__(self, keys: Tensor, values: Tensor, vocab: int, k: int, temperature: float):
        self.keys, self.values = keys, values
        self.vocab, self.k, self.temperature = vocab, k, float(temperature)
        self.key_norms = keys.pow(2).sum(-1)

    def __len__(self) -> int:
        return len(self.values)

    def neighbours(self, queries: Tensor, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(tokens, weights) of each query's k nearest keys, weights ∝ exp(-d/T); `exclude`: key index per query."""
        d = queries.pow(2).sum(-1, keepdim=True) + self.key_norms[None] - 2.0 * queries @ self.keys.T
        d = d.clamp(min=0.0) / self.keys.shape[-1]
        if exclude is not None:
            d.scatter_(1, exclude[:, None], float("inf"))
        k = min(self.k, len(self) - (exclude is not None))
        negative, index = (-d).topk(max(k, 1), dim=-1)
        return self.values[index], (negative / self.temperature).softmax(-1)

    def log_probs(self, queries: Tensor) -> Tensor:
        """log p_kNN (B, V); tokens no neighbour carries get -inf."""
        tokens, weights = self.neighbours(queries)
        probs = torch.zeros(queries.shape[0], self.vocab, device=queries.device).scatter_add_(1, tokens, weights)
        return probs.log()


class MLPMemory(ChatModelMethod):
    """A per-context datastore of the history's hidden states, queried by kNN or imitated by an MLP."""

    name = "mlp_memory"
    conditions: tuple[str, ...] = MEMORY_PROMPTS

    def __init__(
        self,
        loaded: Any,
        mode: str = "mlp",
        lam: float = 0.25,
        knn_k: int = 32,
        knn_temperature: float = 1.0,
        exclude_self: bool = False,
        head: str = "embedding",
        mlp_hidden: int = 1024,
        steps: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        train_batch_size: int = 64,
        ce_weight: float = 0.0,
        encode_chunk: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        prefill_chunk: int = 4096,
        name: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.mode, self.lam, self.knn_k, self.knn_temperature = mode, float(lam), int(knn_k), float(knn_temperature)
        self.exclude_self, self.head = bool(exclude_self), head
        self.steps, self.lr, self.weight_decay = int(steps), float(lr), float(weight_decay)
        self.train_batch_size, self.ce_weight, self.seed = int(train_batch_size), float(ce_weight), int(seed)
        super().__init__(
            loaded,
            batch_size,
            max_context_tokens,
            prefill_chunk,
            name or ("mlp_memory" if mode == "mlp" else "mlp_memory_knn"),
        )
        self.encode_chunk = int(encode_chunk or self.decoder.max_context_tokens)
        self.builder = EpisodeBuilder(self.tokenizer, chat_template_kwargs=self.template_kwargs)
        self.output_embedding = self.model.get_output_embeddings()
        self.vocab = self.output_embedding.weight.shape[0]
        hidden = self.output_embedding.weight.shape[1]
        self.device = next(self.model.parameters()).device
        self.mlp: MemoryMLP | None = None
        if mode == "mlp":
            with seeded(self.seed, self.device):
                self.mlp = MemoryMLP(hidden, int(mlp_hidden), self.vocab, head).to(self.device).eval()
            self.mlp_init = {k: v.clone() for k, v in self.mlp.state_dict().items()}
        self.datastore: Datastore | None = None
        self.losses: list[float] = []

    def make_backend(self) -> MixingBackend:
        return MixingBackend(self.model, self.lam)

    @property
    def backend(self) -> MixingBackend:
        return self.decoder.backend  # type: ignore[return-value]

    # ----------------------------------------------------------------- the interface
    def memorize(self, history: History) -> None:
        self.reset()
        ids = history_token_ids(self.builder, history.messages)
        if len(ids) < 2:
            return
        keys, values = self.datastore_entries(ids)
        self.set_datastore(keys, values)

    def reset(self) -> None:
        super().reset()
        self.datastore = None
        self.backend.memory_log_probs = None
        if self.mlp is not None:
            self.mlp.load_state_dict(self.mlp_init)

    def cost(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.mlp.parameters()) if self.mlp is not None else 0
        return {
            "extra_trainable_params": params,
            "memorize_train_steps": self.steps if self.mode == "mlp" else 0,
            "mode": self.mode,
            "lam": self.lam,
            "knn_k": self.knn_k,
        }

    # ----------------------------------------------------------------- datastore and MLP
    @torch.no_grad()
    def datastore_entries(self, ids: list[int]) -> tuple[Tensor, Tensor]:
        """Datastore entries of a token sequence: (final hidden state at t, token t+1) for t < len-1."""
        keys = []
        for start in range(0, len(ids), self.encode_chunk):
            chunk = torch.tensor([ids[start : start + self.encode_chunk]], device=self.device)
            out = self.model(input_ids=chunk, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            keys.append(out.hidden_states[-1][0].float())
        return torch.cat(keys)[:-1], torch.tensor(ids[1:], device=self.device)

    def set_datastore(self, keys: Tensor, values: Tensor) -> None:
        """Install a datastore (and, in `mlp` mode, train the MLP on it)."""
        self.datastore = Datastore(keys.float(), values.long(), self.vocab, self.knn_k, self.knn_temperature)
        if self.mode == "knn":
            self.backend.memory_log_probs = self.datastore.log_probs
        else:
            self.losses = self.train_mlp(self.datastore)
            self.backend.memory_log_probs = self.mlp_log_probs
        self.decoder.forget_prefix()

    @torch.no_grad()
    def mlp_log_probs(self, hidden: Tensor) -> Tensor:
        return self.mlp(hidden, self.output_embedding).log_softmax(-1)

    def knn_targets(self, store: Datastore, block: int = 1024) -> tuple[Tensor, Tensor]:
        """Every key's kNN distribution as (tokens, weights) of shape (N, k)."""
        tokens, weights = [], []
        for start in range(0, len(store), block):
            index = torch.arange(start, min(start + block, len(store)), device=store.keys.device)
            t, w = store.neighbours(store.keys[index], index if self.exclude_self and len(store) > 1 else None)
            tokens.append(t)
            weights.append(w)
        return torch.cat(tokens), torch.cat(weights)

    def train_mlp(self, store: Datastore) -> list[float]:
        """AdamW on the MLP: cross-entropy to each key's kNN distribution (+ `ce_weight` × next-token CE)."""
        assert self.mlp is not None
        with torch.no_grad():
            target_tokens, target_weights = self.knn_targets(store)
        optimizer = torch.optim.AdamW(self.mlp.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        losses = []
        self.mlp.train()
        with torch.enable_grad():
            for _ in range(self.steps):
                rows = torch.randint(len(store), (min(self.train_batch_size, len(store)),), generator=generator)
                rows = rows.to(store.keys.device)
                log_p = self.mlp(store.keys[rows], self.output_embedding).log_softmax(-1)
                loss = -(target_weights[rows] * log_p.gather(1, target_tokens[rows])).sum(-1).mean()
                if self.ce_weight:
                    loss = loss + self.ce_weight * F.nll_loss(log_p, store.values[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        self.mlp.eval()
        return losses
