"""Build the `SessionManager` that `task=chat` and `task=serve` run on, from the composed config.

The backbone comes from `backbone`, the trained memory from the top-level `adapter` (required: a
session over an untrained memory would remember nothing useful), and the store folder, window and
system message from the task's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from .adapters import adapter_sha256, load_adapter, read_adapter_config
from .attach import attach_memory
from .backbones import load_backbone
from .episodes import EpisodeBuilder
from .errors import UserError
from .session import SessionManager
from .state_store import StateStore


class NoAdapterError(UserError, ValueError):
    pass


def open_manager(cfg: DictConfig, settings: Any) -> SessionManager:
    """`settings`: the task's `store`, `window` (null: the backbone's context length), `system`, `recent_turns`."""
    adapter = cfg.get("adapter")
    if not adapter:
        raise NoAdapterError("a memory session needs adapter=<folder> (a trained δ-mem adapter)")
    if not Path(adapter).is_dir():
        raise NoAdapterError(f"adapter folder {adapter} does not exist")
    spec = instantiate(cfg.backbone)
    loaded = load_backbone(spec)
    if loaded.tokenizer is None:
        raise NoAdapterError(f"backbone {spec.name} has no tokenizer; a chat needs one")
    model = attach_memory(loaded.model, read_adapter_config(adapter))
    load_adapter(model, adapter)
    model.eval()
    window = settings.get("window") or int(getattr(loaded.model.config, "max_position_embeddings", 4096))
    builder = EpisodeBuilder(loaded.tokenizer, chat_template_kwargs=dict(spec.chat_template_kwargs))
    return SessionManager(
        model, builder, StateStore(settings["store"]), adapter_sha256(adapter), spec.name,
        window=int(window), system=settings.get("system"), recent_turns=int(settings.get("recent_turns") or 0),
    )


__all__ = ["NoAdapterError", "open_manager"]
