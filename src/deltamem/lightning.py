"""Episode training with Lightning: the DataModule and the LightningModule of METHOD.md §6.

One step: reset the state → write pass over the history (writes on, gradients flow through the
final state, no KV cache) → read pass over [system + question + answer] with writes off →
cross-entropy on the answer's template tokens + 0.01·(mean β over read tokens − 0.05)².
Only δ-mem parameters reach the optimiser; the backbone stays frozen and in eval mode.
Checkpoints hold the adapter (not the backbone), the optimiser and the schedule, so a stopped
run resumes exactly where it was.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .attach import DeltaMemModel
from .episodes import IGNORE_INDEX, Episode, EpisodeBuilder, collate_episodes

ATTENTION_BACKENDS = ("math", "flash", "efficient", "cudnn")


def attention_backends(names: Sequence[str] | None) -> contextlib.AbstractContextManager:
    """`torch.nn.attention.sdpa_kernel` over the named SDPA backends (None: PyTorch's own choice).

    The choice made in the forward fixes the backward kernel too. On the H200 (session 9,
    docs/RESULTS.md) the fused kernels' bf16 backward gave NaN gradients through Qwen2.5-0.5B's
    layer 8 for whole training micro-batches while `math` gave finite ones on the same inputs."""
    if names is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        raise ValueError(f"training.attention_backends: unknown {unknown} (or empty); choose from {ATTENTION_BACKENDS}")
    return sdpa_kernel([table[n] for n in names])


def fsdp_root(trainer: L.Trainer) -> Any | None:
    """The FullyShardedDataParallel root module when training under FSDP, else None."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    wrapped = trainer.strategy.model
    return wrapped if isinstance(wrapped, FSDP) else None


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.0


class EpisodeDataset(Dataset):
    """Records ({"messages": ...}) → tokenised `Episode`s, built lazily and cached."""

    def __init__(self, records: Sequence[dict], builder: EpisodeBuilder):
        self.records, self.builder = records, builder
        self._cache: dict[int, Episode] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Episode:
        if index not in self._cache:
            record = self.records[index]
            try:
                self._cache[index] = self.builder.build(record["messages"])
            except ValueError as error:
                raise type(error)(f"episode {record.get('id', index)}: {error}") from error
        return self._cache[index]


class ResumableSampler(Sampler[int]):
    """A seeded shuffle per epoch that starts where the (restored) training loop stands, sharded
    across data-parallel ranks.

    Iteration starts at `start` when one is set (the position a checkpoint recorded, set by
    `EpisodeDataModule.load_state_dict`; used once), else at `position()`: (epoch, samples already
    consumed in that epoch by all ranks together), so a resumed run sees exactly the batches an
    uninterrupted run would have seen next. The checkpoint, not the live loop, gives the first
    position: with `num_workers > 0` the loader's workers take their first indices when Lightning
    sizes the LR schedule (`estimated_stepping_batches`), before it restores the loop state, and
    `position()` then still reads (0, 0) (sessions 10-12 resumed their arms from the start of the
    data that way). `started` keeps where the last iteration began (checked by
    `DataPositionCheck`). `ranks()` gives
    (rank, world size): rank r takes every world-th episode of the one global order, so a step of
    W ranks × b episodes covers the same episodes as one process accumulating W micro-batches of b
    (the order is padded by wrapping around so every rank gets as many batches).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        position: Callable[[], tuple[int, int]] | None = None,
        ranks: Callable[[], tuple[int, int]] | None = None,
    ):
        self.size, self.seed, self.position, self.ranks = size, seed, position, ranks
        self.start: tuple[int, int] | None = None  # a restored checkpoint's (epoch, samples consumed)
        self.started: tuple[int, int] | None = None  # where the last iteration began

    def _world(self) -> tuple[int, int]:
        return self.ranks() if self.ranks else (0, 1)

    def __iter__(self) -> Iterator[int]:
        if self.start is not None:
            (epoch, skip), self.start = self.start, None
        else:
            epoch, skip = self.position() if self.position else (0, 0)
        self.started = (epoch, skip)
        rank, world = self._world()
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        order += order[: (-len(order)) % world]  # equal shares for every rank
        return iter(order[skip:][rank::world])

    def __len__(self) -> int:
        _, world = self._world()
        return -(-self.size // world)


class EpisodeDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_records: Sequence[dict],
        builder: EpisodeBuilder,
        batch_size: int = 1,
        segment_unit: str = "message",
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        self.dataset = EpisodeDataset(train_records, builder)
        self.batch_size, self.segment_unit, self.seed, self.num_workers = batch_size, segment_unit, seed, num_workers
        pad = builder.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else builder.tokenizer.eos_token_id
        self.sampler = ResumableSampler(len(self.dataset), seed, self._loop_position, self._ranks)

    def _loop_position(self) -> tuple[int, int]:
        """(epoch, samples consumed) of the fit loop; read when an epoch's iteration starts."""
        if self.trainer is None:
            return 0, 0
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return self.trainer.current_epoch, done * self.batch_size * self.trainer.world_size

    def _ranks(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: where the data order stands (an epoch just finished → the
        next epoch's start)."""
        epoch, samples = self._loop_position()
        if samples >= len(self.sampler) * self._ranks()[1]:
            epoch, samples = epoch + 1, 0
        return {"epoch": epoch, "samples": samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called by Lightning when it restores a checkpoint, before the loader first iterates."""
        self.sampler.start = (int(state["epoch"]), int(state["samples"]))

    def check_position(self, batch_idx: int) -> None:
        """At the first batch of a process: the data order must start where the restored loop
        stands (batch `batch_idx` of the epoch), or the run would silently see other batches."""
        if self.trainer is None or self.sampler.started is None:
            return
        expected = (self.trainer.current_epoch, batch_idx * self.batch_size * self.trainer.world_size)
        if self.sampler.started != expected:
            raise RuntimeError(
                f"the training data started at (epoch, sample) {self.sampler.started} but the restored "
                f"loop stands at {expected}: this checkpoint does not hold the data position "
                f"(saved by EpisodeDataModule.state_dict); retrain, or resume with training.num_workers=0"
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=lambda episodes: collate_episodes(episodes, self.pad_id, self.segment_unit),
            num_workers=self.num_workers,
        )


class DataPositionCheck(L.Callback):
    """Runs `EpisodeDataModule.check_position` once, at the first training batch of the process."""

    def __init__(self) -> None:
        self.checked = False

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.checked and isinstance(trainer.datamodule, EpisodeDataModule):
            trainer.datamodule.check_position(batch_idx)
        self.checked = True


class DeltaMemLightning(L.LightningModule):
    def __init__(
        self,
        model: DeltaMemModel,
        optim: OptimConfig | None = None,
        sparsity_weight: float = 0.01,
        sparsity_target: float = 0.05,
        attention: Sequence[str] | None = None,
    ):
        super().__init__()
        attention_backends(attention)  # an unknown name fails here, not at the first step
        self.attention = None if attention is None else list(attention)
        self.model = model
        self.optim = optim or OptimConfig()
        self.sparsity_weight, self.sparsity_target = sparsity_weight, sparsity_target
        self.strict_loading = False  # checkpoints hold only the memory parameters

    # ----------------------------------------------------------------- the step
    def episode_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        model = self.model
        model.reset_state()
        if batch["write_input_ids"].shape[1] > 0:
            segments = batch["write_segment_ids"] if model.memory_config.strategy.needs_segments else None
            model.write_history(batch["write_input_ids"], batch["write_attention_mask"], segments)
        with torch.no_grad():  # a logged statistic, not part of the loss
            batch_size = batch["read_input_ids"].shape[0]
            norms = [
                m.current_state(batch_size, self.device).flatten(1).norm(dim=1) for m in model.memory_layers.values()
            ]
            written = torch.stack(norms).mean()
        out = model(
            input_ids=batch["read_input_ids"], attention_mask=batch["read_attention_mask"], write=False, use_cache=False
        )
        logits = out.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        beta_mean = self._read_beta_mean(batch["read_attention_mask"])
        sparsity = (beta_mean - self.sparsity_target) ** 2
        return {
            "loss": ce + self.sparsity_weight * sparsity,
            "ce": ce,
            "sparsity": sparsity,
            "beta_mean": beta_mean,
            "state_norm": written,
        }

    def _read_beta_mean(self, mask: Tensor) -> Tensor:
        """Mean β over valid read tokens, gates and layers (the release divided by tokens only).
        Stays on the device: no host synchronisation."""
        betas = torch.stack([m.last_beta for m in self.model.memory_layers.values()])  # (L, B, T, H, r)
        valid = mask.to(betas.dtype)[None, :, :, None, None]
        per_token = betas.shape[0] * betas.shape[-1] * betas.shape[-2]
        return (betas * valid).sum() / (valid.sum() * per_token).clamp_min(1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        with attention_backends(self.attention):
            parts = self.episode_loss(batch)
        batch_size = batch["read_input_ids"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, prog_bar=False, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        self.log("loss", parts["loss"].detach(), prog_bar=True, logger=False, batch_size=batch_size)
        return parts["loss"]

    # ----------------------------------------------------------------- optimisation
    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        """FSDP clips through its root module (the norm spans every rank's shard); elsewhere Lightning's default."""
        root = fsdp_root(self.trainer)
        if root is not None and gradient_clip_val:
            root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for _, p in self.model.memory_parameters()]
        optimizer = torch.optim.AdamW(
            params, lr=self.optim.lr, weight_decay=self.optim.weight_decay, betas=tuple(self.optim.betas)
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(self.optim.warmup_ratio * total))
        floor = self.optim.min_lr_ratio

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train(self, mode: bool = True) -> "DeltaMemLightning":
        super().train(mode)
        self.model.train(mode)  # the backbone stays in eval mode whatever Lightning asks
        return self

    # ----------------------------------------------------------------- checkpoints = adapter only
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {f"model.{k}": v.detach().cpu() for k, v in self._memory_state().items()}
        checkpoint["deltamem_config"] = self.model.memory_config.to_dict()

    def _memory_state(self) -> dict[str, Tensor]:
        keep = {id(p) for _, p in self.model.memory_parameters()}
        return {k: v for k, v in self.model.state_dict(keep_vars=True).items() if id(v) in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        expected = {f"model.{k}" for k in self._memory_state()}
        missing = sorted(expected - set(checkpoint["state_dict"]))
        if missing:
            raise KeyError(f"checkpoint lacks memory tensor '{missing[0]}'")
