"""evals/ifeval_language_shim.py: the release's langdetect stand-in (PAPER_PROTOCOL.md §3), golden
cases worked by hand from the rule and the config's tables, quirks included; and protocol `paper`
scoring through it while `paper_v0` keeps real langdetect."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals import nltk_data
from evals.ifeval import IFEval, item_from_record, load_checkers
from evals.ifeval_language_shim import LanguageShim, LanguageShimError
from evals.templates import config_prompts


@pytest.fixture(scope="module")
def shim() -> LanguageShim:
    return LanguageShim(config_prompts("ifeval")["paper"]["language_shim"])


@pytest.mark.parametrize("text, language", [
    ("مرحبا بالعالم", "ar"),            # Arabic script, no ur/fa hint character
    ("یہ اچھا ہے", "ur"),                # ے and ہ: ur hints (tried before fa)
    ("این کتاب", "fa"),                  # ی and ک: fa hints
    ("मी घरी आहे", "mr"),                # the hint आहे
    ("यह किताब है", "hi"),               # only hi's hint है
    ("यह अच्छा है", "ne"),               # quirk: ne's hint छ is a substring of अच्छा, and ne is tried before hi
    ("это не так", "ru"),                # ru hints это, не (2) against bg's не (1)
    ("това е за мен и че", "bg"),        # bg hints за, и, че (3) against ru's и (1)
    ("안녕하세요", "ko"),
    ("ก م", "ar"),                       # one Thai, one Arabic character: the first script listed wins the tie
    ("Der Hund und die Katze", "de"),
    ("Habari na ya kwa", "sw"),
    ("Não para com", "pt"),              # folded to nao: only para and com hit pt
    ("Não", "en"),                       # quirk: folded "nao" never matches the accented stopword "não"
    ("la", "it"),                        # la is an it and a vi stopword: the first listed wins
    ("Hola amigo, ¿cómo estás hoy?", "en"),  # no es in the tables: no hit, so en
    ("你好世界", "en"),                   # CJK: no listed script, no Latin hit
])
def test_the_shim_classifies_by_script_then_hints_then_stopwords(shim, text, language):
    assert shim.detect(text) == language


def test_empty_text_raises_and_bad_tables_are_refused(shim):
    with pytest.raises(LanguageShimError, match="empty text"):
        shim.detect("   ")
    tables = dict(config_prompts("ifeval")["paper"]["language_shim"])
    tables["latin_stopwords"] = {"fi": ["ja", True]}  # what an unquoted `on` becomes in YAML
    with pytest.raises(ValueError, match=r"language_shim.latin_stopwords.fi: entries must be strings"):
        LanguageShim(tables)
    with pytest.raises(ValueError, match=r"lacks \['latin_fold'\]"):
        LanguageShim({k: v for k, v in tables.items() if k != "latin_fold"})


def test_paper_scores_language_checks_through_the_shim_and_paper_v0_through_langdetect(tmp_path: Path):
    root = tmp_path / "nltk"
    nltk_data.ensure_punkt_tab(root)
    spanish = "Hola amigo, ¿cómo estás hoy? Espero que tengas un buen día con tu familia y tus amigos."
    item = item_from_record({"key": 1, "prompt": "Answer in Spanish.", "instruction_id_list":
                             ["language:response_language"], "kwargs": [{"language": "es"}]}, "test")
    paper, v0 = IFEval("x.jsonl", nltk_data=root), IFEval("x.jsonl", protocol="paper_v0", nltk_data=root)
    assert paper.follow(spanish, item) == {"strict": [False], "loose": [False]}  # the shim has no es
    assert v0.follow(spanish, item) == {"strict": [True], "loose": [True]}  # real langdetect finds es
    lowercase = make_lowercase_item()
    assert paper.follow("der hund und die katze schlafen", lowercase)["strict"] == [False]  # shim: de, not en
    assert paper.follow("the cat and the dog sleep", lowercase)["strict"] == [True]
    import langdetect
    assert load_checkers(root).instructions_registry.instructions.langdetect is langdetect  # restored after


def make_lowercase_item():
    return item_from_record({"key": 2, "prompt": "p", "instruction_id_list": ["change_case:english_lowercase"],
                             "kwargs": [{}]}, "test")
