"""evals/replication_selection.py and task=select_replication: the pre-registered dev rule (highest D,
ties within 1 point broken by memory_only), shared with lanes.py's `best:`, rebuilt from the committed
run folders with a CI for every D."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from evals.replication_selection import select_arm, selection_table

from conftest import REPO_ROOT, compose_config

S13 = REPO_ROOT / "results" / "2026-12-04_h200_s13"


def test_the_rule_takes_the_highest_d_and_breaks_ties_by_memory_only():
    assert select_arm({"a": (2.0, 7.0), "b": (1.2, 9.0), "c": (0.5, 12.0)}) == "b"  # b within 1 of a
    assert select_arm({"a": (2.0, 7.0), "b": (0.9, 9.0)}) == "a"  # 1.1 below: not tied
    with pytest.raises(ValueError, match="no arm has dev results"):
        select_arm({})


def test_the_interim_table_rebuilds_session_13s_dev_rows_and_lists_what_is_missing(tmp_path):
    arms = {"tsw": S13 / "tsw_lr1e-3", "msw": S13 / "msw_lr1e-3", "ssw": S13 / "ssw_lr1e-3",
            "later": tmp_path / "not_trained_yet"}
    with pytest.raises(ValueError, match=r"no dev results .* for \['later'\]"):
        selection_table(arms, n_boot=100)
    table = selection_table(arms, require_all=False, n_boot=100)
    assert table["selected"] == "msw" and table["missing"] == ["later"] and not table["complete"]
    rows = {r["arm"]: r for r in table["arms"]}
    for arm, folder in (("tsw", "tsw_lr1e-3"), ("msw", "msw_lr1e-3"), ("ssw", "ssw_lr1e-3")):
        committed = {r["name"]: r for r in json.loads((S13 / "comparisons" / f"{folder}.json").read_text())}
        assert rows[arm]["D"] == pytest.approx(committed["dev D"]["delta"], abs=1e-9)
        assert rows[arm]["n"] == committed["dev D"]["n"] == 389
    assert [rows[a]["tied_with_best"] for a in ("tsw", "msw", "ssw")] == [False, True, False]  # 1.17 vs 2.20
    assert rows["later"]["missing"] and table["some_D_excludes_zero"]


def test_the_task_writes_the_selection_and_names_the_missing_rows(tmp_path):
    out = tmp_path / "selection"
    cfg = compose_config("task=select_replication", "task.require_all=false", f"task.out={out}", "task.n_boot=100",
                         f"task.runs.s10={REPO_ROOT / 'results' / '2026-12-03_h200_s10'}", f"task.runs.s13={S13}")
    chosen = instantiate(cfg.task)(cfg)
    assert chosen["selected"] == "4: MSW lr 1e-3" and len(chosen["arms"]) == 8
    assert sorted(chosen["missing"]) == ["1: TSW lr 2e-4", "6: TSW lr 1e-3, write length 1,024", "7: TSW lr 2e-3",
                                         "8: TSW lr 1e-3, BAMBOO weight 4"]
    markdown = (tmp_path / "selection.md").read_text()
    assert "| **4: MSW lr 1e-3** | 7.53 | 5.33 | +2.20 [" in markdown
    assert "interim: 4 configuration(s) missing" in markdown
    assert json.loads((tmp_path / "selection.json").read_text())["selected"] == "4: MSW lr 1e-3"
    strict = compose_config("task=select_replication", f"task.out={tmp_path / 'strict'}", "task.n_boot=10")
    with pytest.raises(ValueError, match="task.require_all=false lists them as missing"):
        instantiate(strict.task)(strict)
