"""evals/replication_verdict.py and task=replication_verdict: the pre-registered success rule read
mechanically (claim on one benchmark, E3 not below 0, IFEval no harm), on hand-made rows and on
session 10's committed comparisons."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from evals.replication_verdict import rows_by_name, verdict

from conftest import REPO_ROOT, compose_config


def row(name: str, delta: float, low: float, high: float) -> dict:
    return {"name": name, "delta": delta, "ci_low": low, "ci_high": high}


def rows(*items: dict) -> dict:
    return {r["name"]: r for r in items}


MET = [row("E1 HotpotQA EM", 6.5, 3.0, 9.0), row("E2 HotpotQA EM", 2.0, 0.4, 3.6),
       row("E1 LoCoMo F1", -0.5, -1.5, 0.5), row("E2 LoCoMo F1", 0.1, -0.3, 0.5),
       row("E3 HotpotQA EM", 1.0, -0.6, 2.8), row("E3 LoCoMo F1", -0.4, -1.2, 0.3),
       row("no-harm IFEval prompt strict", -1.9, -5.0, 1.2)]


def test_the_rule_is_met_when_one_benchmark_carries_the_claim_and_nothing_harms():
    found = verdict(rows(*MET))
    assert found["result"] == "met" and found["parts"] == {"claim": "pass", "e3_not_below_0": "pass",
                                                            "ifeval_no_harm": "pass"}
    assert found["claim"]["LoCoMo"]["status"] == "fail"  # one benchmark is enough


@pytest.mark.parametrize("change, result, part", [
    (row("E2 HotpotQA EM", 2.0, -0.1, 3.6), "not met", "claim"),           # E2's CI touches 0
    (row("E3 LoCoMo F1", -1.0, -2.0, -0.1), "not met", "e3_not_below_0"),  # E3's CI wholly below 0
    (row("no-harm IFEval prompt strict", -2.1, -5.0, 1.0), "not met", "ifeval_no_harm"),
])
def test_one_failing_part_fails_the_rule(change, result, part):
    found = verdict(rows(*MET, change) | {change["name"]: change})
    assert found["result"] == result and found["parts"][part] == "fail"


def test_a_missing_row_leaves_the_rule_incomplete_unless_something_already_failed():
    without_ifeval = [r for r in MET if not r["name"].startswith("no-harm")]
    assert verdict(rows(*without_ifeval))["result"] == "incomplete"
    without_locomo_e3 = [r for r in MET if r["name"] != "E3 LoCoMo F1"]
    assert verdict(rows(*without_locomo_e3))["result"] == "met"  # only HotpotQA's E3 is required
    failing = [r for r in without_ifeval if r["name"] != "E2 HotpotQA EM"] + [row("E2 HotpotQA EM", -1, -2, 0.5)]
    assert verdict(rows(*failing))["result"] == "not met"


def test_session_10s_committed_endpoints_do_not_meet_the_rule(tmp_path):
    out = tmp_path / "verdict"
    files = [REPO_ROOT / "results" / "2026-12-03_h200_s10" / "comparisons.json"]
    cfg = compose_config("task=replication_verdict", f"task.comparisons=[{files[0]}]", f"task.out={out}")
    found = instantiate(cfg.task)(cfg)
    assert found["result"] == "not met" and found["claim"]["HotpotQA"]["status"] == "fail"
    assert found["claim"]["HotpotQA"]["rows"]["E2 HotpotQA EM"][0] == pytest.approx(-0.2)
    assert "**Success rule: not met.**" in (tmp_path / "verdict.md").read_text()
    assert json.loads((tmp_path / "verdict.json").read_text())["parts"]["ifeval_no_harm"] == "missing"
    with pytest.raises(ValueError, match="appears twice"):
        rows_by_name(files * 2)
