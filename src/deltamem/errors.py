"""The base of every error a person can act on (bad input, a missing file, a refused run).

`src/run.py` prints such an error as one line, `error: <message>`, and exits 1; the message names
the file, the record and the field or the cause. Set DELTAMEM_TRACEBACK=1 (or HYDRA_FULL_ERROR=1)
for the full traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Mixed into the library's and the lab's input errors (`class X(UserError, ValueError)`)."""


__all__ = ["UserError"]
