"""The base of every error a person can act on (bad input, a missing file, a refused run).

`src/run.py` prints such an error as one line, `error: <message>`, and exits 1; the message names
the file, the record and the field or the cause. Set DELTAMEM_TRACEBACK=1 (or HYDRA_FULL_ERROR=1)
for the full traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Mixed into the library's and the lab's input errors (`class X(UserError, ValueError)`)."""


class MissingSettingError(UserError, ValueError):
    """A config value marked `???` that the command line did not set."""


def require_settings(section: Any, prefix: str) -> None:
    """Raise MissingSettingError naming every `???` under `section` (an OmegaConf node at `prefix`)."""
    from omegaconf import OmegaConf

    def walk(node: Any, path: str) -> list[str]:  # unresolved: an interpolation of a `???` is not named
        if isinstance(node, dict):
            return [k for key, value in node.items() for k in walk(value, f"{path}.{key}" if path else str(key))]
        if isinstance(node, list):
            return [k for i, value in enumerate(node) for k in walk(value, f"{path}[{i}]")]
        return [path] if node == "???" else []

    unset = sorted(walk(OmegaConf.to_container(section, resolve=False), ""))
    if unset:
        needed = ", ".join(f"{prefix}.{key}=..." for key in unset)
        raise MissingSettingError(f"this command needs {needed}")


__all__ = ["MissingSettingError", "UserError", "require_settings"]
