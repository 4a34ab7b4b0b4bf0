"""Reading the answer letter (A–D) back out of a GPQA output; one cascade per extraction rule.

- "release" (protocol paper, PAPER_PROTOCOL.md §4): five patterns tried in order on the whole output,
  every one case-insensitive and spanning lines; the first that matches anything gives its **last**
  match. Then the first and the last non-empty line, each tested for a bare letter and for a line
  opening with one. Lower-case letters count, so "the correct answer is a …" reads as A.
- "v0" (paper_v0 and official): JSON, then \\boxed{}, then "answer is/answer:" forms (upper-case letters
  only outside JSON), then a lone letter on the last or the first line; text after a `</think>`
  is tried first.
Both return None when no letter is found (the release's "", scored wrong).
"""

from __future__ import annotations

import re
from typing import Callable

_FLAGS = re.IGNORECASE | re.DOTALL
RELEASE_PATTERNS = (
    re.compile(r'```json\s*\{[^`]*?"answer"\s*:\s*"([A-D])"[^`]*?\}\s*```', _FLAGS),  # a fenced JSON block
    re.compile(r'"answer"\s*:\s*"([A-D])"', _FLAGS),  # "answer": "X" anywhere
    re.compile(r"\\boxed\s*\{\s*(?:\\text\s*\{\s*)?([A-D])\s*\}?\s*\}", _FLAGS),
    re.compile(r"(?:final answer|correct answer|answer)\s*[:：][\s*]*([A-D])\b", _FLAGS),
    re.compile(r"(?:final answer|correct answer)\s*(?:is)?[\s*]*([A-D])\b", _FLAGS),
)
_BARE_LINE = re.compile(r"[*(\[]*([A-D])[*)\].:]*", re.IGNORECASE)  # the whole line: **(B)**, [C]., D:
_LEADING_LETTER = re.compile(r"([A-D])(?:[.):]| {2,}|$)", re.IGNORECASE)  # "B. because", "C) ...", "A"


def extract_release(text: str) -> str | None:
    """The release's cascade (see the module docstring); the letter upper-cased, or None."""
    text = str(text)
    for pattern in RELEASE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines[:1] + lines[-1:]:  # the first line, then the last
        match = _BARE_LINE.fullmatch(line) or _LEADING_LETTER.match(line)
        if match:
            return match.group(1).upper()
    return None


_JSON_RE = re.compile(r"""\{\s*["']?answer["']?\s*:\s*["']?\s*\(?\s*([A-Da-d])\s*\)?\s*["']?\s*\}""", re.I)
_BOXED_RE = re.compile(r"\\boxed\s*\{\s*(?:\\(?:text|mathrm|textbf)\s*\{)?\s*\(?\s*([A-D])\s*\)?\s*\}")
_ANSWER_RE = re.compile(
    r"answer(?:\s+is|\s*:)[\s:*_]*(?:option\s+|choice\s+)?[(\[]?\s*([A-D])\s*[)\]]?(?![A-Za-z0-9])", re.I
)
_LONE_RE = re.compile(r"^[(\[]?([A-D])[)\]]?[.:]?$")


def _last_group(pattern: re.Pattern[str], text: str, fold_case: bool = False) -> str | None:
    """The captured letter of the last match, upper-cased; case-sensitive letters unless fold_case."""
    found = None
    for match in pattern.finditer(text):
        letter = match.group(1)
        if fold_case or letter.isupper():
            found = letter.upper()
    return found


def _extract_v0(text: str) -> str | None:
    for pattern, fold in ((_JSON_RE, True), (_BOXED_RE, False), (_ANSWER_RE, False)):
        letter = _last_group(pattern, text, fold)
        if letter is not None:
            return letter
    lines = [line.strip().strip("*`_ ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    for line in lines[-1:] + lines[:1]:  # the last line wins over the first
        match = _LONE_RE.match(line)
        if match:
            return match.group(1)
    return None


def extract_v0(text: str) -> str | None:
    """The harness's v0 cascade: JSON > \\boxed > "answer is" > lone letter, after `</think>` first."""
    if not text:
        return None
    if "</think>" in text:  # a reasoning block: prefer what follows it
        letter = _extract_v0(text.rsplit("</think>", 1)[1])
        if letter is not None:
            return letter
    return _extract_v0(text)


EXTRACTORS: dict[str, Callable[[str], str | None]] = {"release": extract_release, "v0": extract_v0}
