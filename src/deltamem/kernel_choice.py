"""Which kernels δ-mem runs: configuration (`kernels:` in conf/config.yaml), recorded with every run.

Five choices, each with the environment variable that overrides it (the override is recorded too):

| field            | values                        | environment                      |
|------------------|-------------------------------|----------------------------------|
| `triton_scan`    | true / false                  | DELTAMEM_TRITON_SCAN=1/0         |
| `scan_family`    | auto / rows / chunks          | DELTAMEM_SCAN_PARALLEL=auto/0/1  |
| `chain`          | auto / one_pass / two_levels  | DELTAMEM_CHAIN_GROUPS=auto/0/1   |
| `fused_activate` | true / false                  | DELTAMEM_FUSED_ACTIVATE=1/0      |
| `fused_decode`   | true / false                  | DELTAMEM_FUSED_DECODE=1/0        |

`configure(...)` sets them for the process (tasks call it with `cfg.kernels` before building a
model); `setting(field)` is what the kernels consult (the environment first, then the
configuration); `effective()` is what `run_info.json` / `results.json` record. This module imports
nothing from the library, so every kernel can import it.
"""

from __future__ import annotations

import os
from typing import Any

# field -> (environment variable, config value -> internal code, default config value)
_KNOBS: dict[str, tuple[str, dict[Any, str], Any]] = {
    "triton_scan": ("DELTAMEM_TRITON_SCAN", {True: "1", False: "0"}, True),
    "scan_family": ("DELTAMEM_SCAN_PARALLEL", {"auto": "auto", "rows": "0", "chunks": "1"}, "auto"),
    "chain": ("DELTAMEM_CHAIN_GROUPS", {"auto": "auto", "one_pass": "0", "two_levels": "1"}, "auto"),
    "fused_activate": ("DELTAMEM_FUSED_ACTIVATE", {True: "1", False: "0"}, True),
    "fused_decode": ("DELTAMEM_FUSED_DECODE", {True: "1", False: "0"}, True),
}
_configured: dict[str, str] = {field: codes[default] for field, (_, codes, default) in _KNOBS.items()}


def configure(**values: Any) -> None:
    """Set choices for this process; unknown fields or values are refused naming the options."""
    for field, value in values.items():
        if field not in _KNOBS:
            raise ValueError(f"kernels.{field}: unknown kernel choice; expected one of {sorted(_KNOBS)}")
        codes = _KNOBS[field][1]
        if value not in codes:
            raise ValueError(f"kernels.{field}={value!r}: expected one of {list(codes)}")
        _configured[field] = codes[value]


def reset() -> None:
    """Back to the defaults (tests)."""
    for field, (_, codes, default) in _KNOBS.items():
        _configured[field] = codes[default]


def setting(field: str) -> str:
    """The internal code of a choice: its environment variable when set, else the configuration."""
    variable, codes, _ = _KNOBS[field]
    override = os.environ.get(variable)
    if override is not None:
        if override not in codes.values():
            raise ValueError(f"{variable} must be one of {sorted(set(codes.values()))}, got {override!r}")
        return override
    return _configured[field]


def enabled(field: str) -> bool:
    return setting(field) == "1"


def effective() -> dict[str, dict[str, Any]]:
    """Every choice as it stands, with where it came from (`config` or the environment variable)."""
    out = {}
    for field, (variable, codes, _) in _KNOBS.items():
        code = setting(field)
        value = next(v for v, c in codes.items() if c == code)
        out[field] = {"value": value, "source": variable if variable in os.environ else "config"}
    return out


__all__ = ["configure", "effective", "enabled", "reset", "setting"]
