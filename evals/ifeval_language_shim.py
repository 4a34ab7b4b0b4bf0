"""The δ-mem release's stand-in for `langdetect` in IFEval (PAPER_PROTOCOL.md §3, "Shims").

The release scores IFEval with lm-eval's checkers but, in practice always, with its own `detect`
in place of the `langdetect` module. Three of lm-eval's checkers call it:
`language:response_language`, and `change_case:english_capital` / `english_lowercase` (which ask
for "en"); 95 of the 541 prompts carry one of them. PAPER_PROTOCOL.md names only the first, but the
release replaces the module that all three read. Protocol `paper` swaps the shim in for the
checkers (`shimmed_langdetect`); the other protocols keep real langdetect. The rule:

1. Empty text (after strip) raises `LanguageShimError`, which the checker counts as followed.
2. Otherwise the non-Latin script with the most characters decides, if any is present (ties: the
   first script listed). Arabic script: `ur` if a `ur` hint character occurs, else `fa` if a `fa`
   hint does, else `ar`. Devanagari: the first language whose hint occurs as a substring, else
   `hi`. Cyrillic: `bg` if more distinct tokens are `bg` hints than `ru` hints, else `ru`.
3. Otherwise the lowercased text is accent-folded, cut into `\\w+` tokens, and the Latin language
   with the most stopword hits wins (ties: the first listed; no hit: `en`). CJK text ends here as
   `en`. A folded token never matches an accented stopword (`für`, `não`): the tables are used as
   given.

The tables are protocol data: `loader.prompts.paper.language_shim` in conf/benchmark/ifeval.yaml,
with their source named there.
"""

from __future__ import annotations

import contextlib
import re
import types
from typing import Any, Iterator, Mapping

import regex

_WORD = re.compile(r"\w+", flags=re.UNICODE)


class LanguageShimError(Exception):
    """What the shim raises for text it cannot classify (langdetect's LangDetectException)."""


class LanguageShim:
    """`detect(text) -> language code` by the rule above, over the protocol's tables."""

    def __init__(self, tables: Mapping[str, Any]):
        missing = [k for k in ("scripts", "arabic_hints", "devanagari_hints", "cyrillic_hints", "latin_stopwords",
                               "latin_fold") if k not in tables]  # fmt: skip
        if missing:
            raise ValueError(f"language_shim lacks {missing}")
        for name in ("devanagari_hints", "cyrillic_hints", "latin_stopwords"):
            for code, words in tables[name].items():
                odd = [w for w in words if not isinstance(w, str)]
                if odd:  # YAML reads an unquoted `on` or `no` as a boolean
                    raise ValueError(f"language_shim.{name}.{code}: entries must be strings, got {odd}")
        self.scripts = {code: regex.compile(rf"\p{{Script={name}}}") for code, name in tables["scripts"].items()}
        self.arabic = {code: set(chars) for code, chars in tables["arabic_hints"].items()}
        self.devanagari = {code: list(words) for code, words in tables["devanagari_hints"].items()}
        self.cyrillic = {code: set(words) for code, words in tables["cyrillic_hints"].items()}
        self.latin = {code: set(words) for code, words in tables["latin_stopwords"].items()}
        fold = tables["latin_fold"]
        if len(fold["from"]) != len(fold["to"]):
            raise ValueError("language_shim.latin_fold: `from` and `to` need one character each")
        self.fold = str.maketrans(fold["from"], fold["to"])

    def detect(self, text: str) -> str:
        text = str(text or "").strip()
        if not text:
            raise LanguageShimError("Cannot detect language from empty text")
        counts = {code: len(pattern.findall(text)) for code, pattern in self.scripts.items()}
        script, count = max(counts.items(), key=lambda item: item[1])  # the first of equal counts
        if count:
            return self._within_script(script, text)
        tokens = _WORD.findall(text.lower().translate(self.fold))
        hits = {code: sum(token in words for token in tokens) for code, words in self.latin.items()}
        best, score = max(hits.items(), key=lambda item: item[1])
        return best if score > 0 else "en"

    def _within_script(self, script: str, text: str) -> str:
        if script == "ar":
            characters = set(text)
            return next((code for code in ("ur", "fa") if characters & self.arabic[code]), "ar")
        if script == "hi":
            return next((code for code, words in self.devanagari.items() if any(w in text for w in words)), "hi")
        if script == "ru":
            tokens = set(_WORD.findall(text.lower()))
            bg, ru = (len(tokens & self.cyrillic[code]) for code in ("bg", "ru"))
            return "bg" if bg > ru else "ru"
        return script


@contextlib.contextmanager
def shimmed_langdetect(instructions: types.ModuleType, shim: LanguageShim | None) -> Iterator[None]:
    """Within the block, lm-eval's `instructions` module sees the shim as `langdetect` (no-op for None)."""
    if shim is None:
        yield
        return
    real = instructions.langdetect
    instructions.langdetect = types.SimpleNamespace(detect=shim.detect, LangDetectException=LanguageShimError)
    try:
        yield
    finally:
        instructions.langdetect = real


__all__ = ["LanguageShim", "LanguageShimError", "shimmed_langdetect"]
