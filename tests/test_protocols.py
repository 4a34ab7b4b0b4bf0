"""Protocols as data and as recorded: templates (evals/templates.py), the effective protocol of a
results file across the 2026-12-03 renaming (evals/protocols.py), and the tools that compare or
print protocols (paired Δ, tables)."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from evals.paired import compare_runs
from evals.protocols import effective_protocol
from evals.tables import build_tables
from evals.templates import TemplateError, config_prompts, fill, protocol_prompts

from conftest import compose_config
from test_paired import locomo_rows, make_run


def test_fill_replaces_named_fields_only():
    assert fill('{"answer": "C"} {q}', q="Why {x}?") == '{"answer": "C"} Why {x}?'  # values are not re-scanned
    assert fill("{a}{a}-{b}", a=1, b="") == "11-"
    with pytest.raises(TemplateError, match=r"field \{qestion\} has no value"):
        fill("Question: {qestion}", question="q")


def test_prompt_sets_are_checked():
    with pytest.raises(TemplateError, match="no prompt set for protocol 'x'"):
        protocol_prompts("locomo", "x", None, ())
    with pytest.raises(TemplateError, match=r"lacks \['qa'\]"):
        protocol_prompts("locomo", "paper", {"paper": {"source": "s"}}, ("source", "qa"))


@pytest.mark.parametrize(
    "bench, default",
    [("locomo", "paper"), ("hotpotqa", "official"), ("gpqa", "paper")],  # the defaults stay what they were
)
def test_configs_hold_the_prompts_and_hydra_passes_them(bench, default):
    sets = config_prompts(bench)
    assert {"paper", "paper_v0", "official"} <= set(sets)
    assert sets["paper"]["source"].startswith("declare-lab/delta-Mem@5cd5d91 deltamem/eval/")
    assert sets["paper_v0"]["source"] == "harness paraphrase, superseded 2026-12-03 (paper_v0)"
    cfg = compose_config("task=eval", f"benchmark={bench}")
    assert cfg.benchmark.loader.protocol == default
    for protocol in sets:
        composed = compose_config("task=eval", f"benchmark={bench}", f"benchmark.loader.protocol={protocol}")
        loaded = instantiate(composed.benchmark.loader)
        python_default = type(loaded)(source="x", protocol=protocol)  # no prompts given: read from the same file
        assert loaded.templates == python_default.templates == sets[protocol]
        assert loaded.protocol_source == sets[protocol]["source"]


def test_effective_protocol_of_legacy_and_new_results():
    assert effective_protocol({"benchmark": "locomo", "protocol": "paper"}) == "paper_v0"  # written before
    assert effective_protocol({"benchmark": "hotpotqa", "protocol": "paper"}) == "paper_v0"
    assert effective_protocol({"benchmark": "gpqa", "protocol": "paper"}) == "paper_v0"
    new = {"benchmark": "locomo", "protocol": "paper", "protocol_source": "declare-lab/delta-Mem@5cd5d91 x"}
    assert effective_protocol(new) == "paper"
    assert effective_protocol({"benchmark": "hotpotqa", "protocol": "official"}) == "official"  # unchanged
    assert effective_protocol({"benchmark": "ifeval", "protocol": "paper"}) == "paper_v0"  # the raw prompt then
    assert effective_protocol({"benchmark": "ifeval", "protocol": "official"}) == "official"
    assert effective_protocol({"benchmark": "memory_agent_bench", "protocol": "paper"}) == "paper_v0"
    assert effective_protocol({"benchmark": "locomo"}) is None


def _stamp(run, protocol: str, source: str | None):
    results = json.loads((run / "results.json").read_text())
    results["protocol"] = protocol
    results.pop("protocol_source", None)
    if source:
        results["protocol_source"] = source
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_paired_refuses_a_legacy_paper_run_against_a_release_paper_run(tmp_path):
    rows = locomo_rows("no_context", {"q1": 0.0, "q2": 0.5, "q3": 0.0, "q4": 0.0})
    legacy = make_run(tmp_path / "legacy", "locomo", "paper", "vanilla", rows)  # no protocol_source
    v0 = _stamp(make_run(tmp_path / "v0", "locomo", "paper_v0", "vanilla", rows), "paper_v0", "harness")
    release = _stamp(make_run(tmp_path / "new", "locomo", "paper", "vanilla", rows), "paper", "declare-lab")
    with pytest.raises(ValueError, match="runs under different protocols: paper_v0 vs paper"):
        compare_runs(legacy, "no_context", release, "no_context", n_boot=10)
    same = compare_runs(legacy, "no_context", v0, "no_context", n_boot=10)
    assert same["protocol"] == "paper_v0" and same["delta"] == 0.0 and same["excluded_categories"] == ["5"]


def test_tables_print_the_effective_protocol_and_its_source(tmp_path):
    rows = locomo_rows("no_context", {"q1": 0.0, "q2": 0.5, "q3": 0.0, "q4": 0.0})
    legacy = make_run(tmp_path / "legacy", "locomo", "paper", "vanilla", rows)
    release = _stamp(make_run(tmp_path / "new", "locomo", "paper", "deltamem", rows), "paper",
                     "declare-lab/delta-Mem@5cd5d91 deltamem/eval/locomo_protocol.py")
    markdown, _ = build_tables([legacy, release])
    assert "### locomo (protocol: paper, paper_v0)" in markdown
    assert "| vanilla | ? | paper_v0 | no_context |" in markdown and "| deltamem | ? | paper | no_context |" in markdown
    assert ("Protocols: paper = declare-lab/delta-Mem@5cd5d91 deltamem/eval/locomo_protocol.py; "
            "paper_v0 = not recorded.") in markdown


def test_task_eval_binds_the_backbone_tokenizer_and_records_the_spec(tmp_path):
    """LoCoMo paper's truncation counts the backbone's tokens: a 200-token window (budget 150) cuts the
    conversation that a 100,000-token one keeps whole; results.json names the spec."""
    from test_protocol_v0_golden import SAMPLE

    from evals.tasks import evaluate

    data = tmp_path / "locomo.json"
    data.write_text(json.dumps([SAMPLE]))
    prompt_tokens = {}
    for window in (200, 100_000):
        run = tmp_path / f"run{window}"
        cfg = compose_config(
            "task=eval", "benchmark=locomo", "method=vanilla", "backbone=tiny", f"benchmark.loader.source={data}",
            f"benchmark.loader.context_window={window}", f"paths.output_dir={run}", "task.default_run_dir=null",
            "task.wandb_name=null", "logger=none",
        )
        results = evaluate(cfg, conditions=["full_context"], limit=1, progress=False)
        assert results["protocol"] == "paper"
        assert results["protocol_source"] == "declare-lab/delta-Mem@5cd5d91 deltamem/eval/locomo_protocol.py"
        assert results["conditions"]["full_context"]["protocol_source"] == results["protocol_source"]
        (row,) = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        prompt_tokens[window] = row["prompt_tokens"]
    assert prompt_tokens[200] < prompt_tokens[100_000]


def test_ifevals_protocol_rules_are_config_data_read_alike_by_hydra_and_python():
    sets = config_prompts("ifeval")
    assert set(sets) == {"paper", "paper_v0", "official"}
    assert sets["paper"]["source"].startswith("declare-lab/delta-Mem@5cd5d91 deltamem/eval/benchmark_compare.py")
    assert [(sets[p]["strip_prompt"], sets[p]["max_new_tokens"]) for p in ("paper", "paper_v0", "official")] == [
        (True, 1500), (False, 1500), (False, 1280)]
    for protocol in sets:
        composed = compose_config("task=eval", "benchmark=ifeval", f"benchmark.loader.protocol={protocol}")
        loaded = instantiate(composed.benchmark.loader)
        python_default = type(loaded)(source="x", protocol=protocol)
        assert loaded.templates == python_default.templates == sets[protocol]
        want = (sets[protocol]["source"], sets[protocol]["max_new_tokens"])
        assert (loaded.protocol_source, loaded.max_new_tokens) == want
    changed = {"paper": {**sets["paper"], "max_new_tokens": 64}}
    assert type(loaded)(source="x", protocol="paper", prompts=changed).max_new_tokens == 64  # the config decides
    with pytest.raises(ValueError, match=r"unknown IFEval protocol 'official' \(expected one of \('paper',\)\)"):
        type(loaded)(source="x", protocol="official", prompts=changed)


@pytest.mark.parametrize("protocol", ["paper", "paper_v0", "official"])
def test_decoding_settings_are_protocol_data_in_the_configs(protocol):
    """PAPER_PROTOCOL.md §1 and §2: LoCoMo samples (T 0.4, top-p 0.9, top-k 10, 50 tokens, seed 42 +
    question index), HotpotQA decodes 32 greedy tokens; a prompt set without `decoding` is refused."""
    from evals.hotpotqa import REQUIRED as HOTPOT_REQUIRED
    from evals.locomo_render import REQUIRED as LOCOMO_REQUIRED

    locomo = config_prompts("locomo")[protocol]["decoding"]
    assert locomo == {"max_new_tokens": 50, "do_sample": True, "temperature": 0.4, "top_p": 0.9, "top_k": 10}
    assert config_prompts("hotpotqa")[protocol]["decoding"] == {"max_new_tokens": 32}
    sets = {protocol: {k: v for k, v in config_prompts("locomo")[protocol].items() if k != "decoding"}}
    with pytest.raises(TemplateError, match=r"lacks \['decoding'\]"):
        protocol_prompts("locomo", protocol, sets, LOCOMO_REQUIRED)
    assert "decoding" in HOTPOT_REQUIRED
