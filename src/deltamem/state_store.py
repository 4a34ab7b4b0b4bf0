"""A folder of saved per-user δ-mem states: `states/<user>.safetensors` and `states/<user>.json`.

The safetensors file is the record. It holds every written layer's state (1, H, r, r), and its
header holds the metadata as JSON under the key `deltamem_session`:
* the adapter's sha256 and the backbone name (a state is refused under any other);
* turns, tokens and messages written, and the role of the last message written;
* the last turns' messages, only when the session keeps recent turns in the prompt (off by default);
* created and updated times;
* the sha256 of the tensor bytes, so a corrupted file is refused.

The `.json` beside it is a copy of the metadata for people and tools. It is never read back.

Saves are atomic: write a temporary file in the same folder, fsync, rename, fsync the folder. A
save killed at any point leaves the previous state whole. User ids are checked before any path is
built: letters, digits and `._@-`, at most 128 characters, starting with a letter or digit (so no
`..`, no `/`, no empty id).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import UserError
from .state import MemoryState

FORMAT = "deltamem-session"
FORMAT_VERSION = 1
HEADER_KEY = "deltamem_session"
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class SessionStoreError(UserError, ValueError):
    """A bad user id, or a saved state that is corrupted or belongs to another adapter or backbone."""


def check_user_id(user: str) -> str:
    if not isinstance(user, str) or USER_ID.fullmatch(user) is None or ".." in user:
        raise SessionStoreError(
            f"user id {user!r} is not allowed: use 1-128 letters, digits or ._@- , starting with a letter or digit"
        )
    return user


@dataclass
class SessionMeta:
    """What is known about one user's memory besides the state itself."""

    user: str
    adapter_sha256: str
    backbone: str
    turns: int = 0
    tokens_written: int = 0
    messages_written: int = 0
    last_role: str | None = None  # the role of the last message written (continues the chat rendering)
    recent: list[dict[str, str]] = field(default_factory=list)  # the last turns, when kept in the prompt
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class StateStore:
    """Per-user states under `root/states/`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.folder = self.root / "states"

    def path(self, user: str) -> Path:
        return self.folder / f"{check_user_id(user)}.safetensors"

    def exists(self, user: str) -> bool:
        return self.path(user).is_file()

    def users(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.safetensors")) if self.folder.is_dir() else []

    # ------------------------------------------------------------------ save
    def save(self, state: MemoryState, meta: SessionMeta, before_rename: Any = None) -> Path:
        """Write `state` (batch 1) and `meta` atomically; `before_rename()` (tests) runs between the
        fsync of the temporary file and the rename."""
        from safetensors.torch import save_file

        target = self.path(meta.user)
        tensors = state_tensors(state)
        header = {**asdict(meta), "format": FORMAT, "version": FORMAT_VERSION, "layers": sorted(state.layers),
                  "state_sha256": tensor_digest(tensors)}
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        save_file(tensors, str(partial), metadata={HEADER_KEY: json.dumps(header)})
        _fsync(partial)
        if before_rename is not None:
            before_rename()
        os.replace(partial, target)
        _fsync_folder(self.folder)
        _write_atomic(target.with_suffix(".json"), json.dumps(header, indent=2) + "\n")
        return target

    # ------------------------------------------------------------------ load
    def load(self, user: str, adapter_sha256: str, backbone: str) -> tuple[MemoryState, SessionMeta] | None:
        """The saved state and metadata of `user`, None when nothing is saved. A corrupted file, or
        one saved under another adapter or backbone, raises SessionStoreError."""
        from safetensors import safe_open

        path = self.path(user)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})[HEADER_KEY])
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as error:  # truncated, overwritten or not a safetensors file at all
            reason = f"{type(error).__name__}: {error}"
            raise SessionStoreError(f"{path}: the saved state is unreadable ({reason})") from error
        if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
            raise SessionStoreError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} file")
        if tensor_digest(tensors) != header.get("state_sha256"):
            raise SessionStoreError(f"{path}: the state does not match its checksum (corrupted); refusing to load it")
        if header["adapter_sha256"] != adapter_sha256:
            raise SessionStoreError(
                f"{path}: saved under adapter {header['adapter_sha256'][:12]}…, not the loaded {adapter_sha256[:12]}…; "
                "a state only means something to the adapter that wrote it"
            )
        if header["backbone"] != backbone:
            raise SessionStoreError(f"{path}: saved with backbone {header['backbone']!r}, not {backbone!r}")
        fields = {k: header[k] for k in SessionMeta.__dataclass_fields__}
        layers: dict[int, Tensor | None] = {int(i): None for i in header["layers"]}
        layers.update({int(name.split(".")[1]): t for name, t in tensors.items()})
        return MemoryState(layers), SessionMeta(**fields)

    def delete(self, user: str) -> bool:
        """Forget `user`'s saved memory; whether there was one."""
        path = self.path(user)
        existed = path.is_file()
        for victim in (path, path.with_suffix(".json")):
            victim.unlink(missing_ok=True)
        if existed:
            _fsync_folder(self.folder)
        return existed


def state_tensors(state: MemoryState) -> dict[str, Tensor]:
    """`layer.<i>` → that layer's state on the CPU (layers never written are left out)."""
    sizes = state.batch_size
    if sizes not in (None, 1):
        raise ValueError(f"a saved session holds one user's state (batch 1), got batch {sizes}")
    return {f"layer.{i}": s.detach().cpu().contiguous() for i, s in state.layers.items() if s is not None}


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    _fsync(partial)
    os.replace(partial, path)


__all__ = ["SessionMeta", "SessionStoreError", "StateStore", "check_user_id", "state_tensors", "tensor_digest"]
