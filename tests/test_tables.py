"""task=table's run list (evals/tables.py expand_runs): a run folder, a sweep folder, a glob."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_runs_may_be_a_folder_a_sweep_folder_or_a_glob(tmp_path, monkeypatch):
    from evals.tables import expand_runs

    for run in ("sweep/rank=4", "sweep/rank=8/eval", "single"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "results.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    assert expand_runs("single") == [Path("single")]
    assert expand_runs("sweep") == [Path("sweep/rank=4"), Path("sweep/rank=8/eval")]
    assert expand_runs(["sweep/rank=*", "single", "single"]) == [
        Path("sweep/rank=4"), Path("sweep/rank=8/eval"), Path("single")]
    with pytest.raises(FileNotFoundError, match="holds no results.json"):
        expand_runs("empty")
    with pytest.raises(FileNotFoundError, match="matches no folder"):
        expand_runs("nothing*")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_runs(["single", "gone"])
