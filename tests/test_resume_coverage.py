"""scripts/resume_coverage.py: resumes found from the wait between logged steps, the batches a run
restarted at each resume saw, and the replay check lining a resumed curve up with a reference."""

from __future__ import annotations

import importlib.util
import json
import random

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("resume_coverage", REPO_ROOT / "scripts" / "resume_coverage.py")
coverage_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(coverage_script)


def batch_loss(position: int) -> float:
    """A loss set by the batch alone (what makes the replay visible): a fixed draw per data position."""
    return 1.0 + 3.0 * random.Random(position).random()


def write_run(folder, resumed_from: list[int], finished: bool, steps: int = 60, restarts: bool = True) -> None:
    """Log every 5 steps, 10 s apart, 100 s more after each resume; the data order restarts there
    (`restarts`, the old behaviour) or continues (the fixed one)."""
    folder.mkdir(parents=True)
    rows, clock, start = [], 0.0, 0
    for step in range(0, steps + 1, 5):
        if rows and rows[-1]["step"] in resumed_from:
            clock += 100.0
            start = rows[-1]["step"] if restarts else 0
        clock += 10.0
        rows.append({"step": step, "time": clock, "train/loss": batch_loss(step - start)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (folder / "train_result.json").write_text("{}")


def test_a_twice_resumed_run_saw_its_longest_segment(tmp_path):
    write_run(tmp_path / "arm", [20, 45], finished=True)
    write_run(tmp_path / "reference", [], finished=False)
    out = tmp_path / "coverage.json"
    coverage_script.main([str(tmp_path / "arm"), "--steps", "60", "--reference", str(tmp_path / "reference"),
                          "--skip-early", "0", "--out", str(out)])
    row = json.loads(out.read_text())[str(tmp_path / "arm")]
    assert row["resumed_from"] == [20, 45] and row["segments"] == [20, 25, 15]
    assert (row["unique_steps"], row["unique_fraction"], row["finished"]) == (25, round(25 / 60, 3), True)
    assert row["first_steps_seen_times"] == [15, 3]
    check = row["replay_check"]
    assert check["after_resume_at"] == 20 and check["r_at_resume_offset"] == 1.0  # the same batches
    assert check["r_other_offsets_max"] < 0.9


def test_an_unfinished_run_counts_up_to_its_last_log_and_an_uninterrupted_one_has_no_check(tmp_path):
    write_run(tmp_path / "cut", [30], finished=False, steps=50)
    row = coverage_script.coverage(tmp_path / "cut", 132, 1.6, None)
    assert (row["segments"], row["unique_steps"], row["finished"]) == ([30, 20], 30, False)
    assert "replay_check" not in row
    write_run(tmp_path / "straight", [], finished=True)
    assert coverage_script.coverage(tmp_path / "straight", 60, 1.6, None)["segments"] == [60]


def test_peers_resumed_at_different_steps_line_up_where_their_data_order_says(tmp_path):
    for restarts in (True, False):
        names = [tmp_path / f"{restarts}_a", tmp_path / f"{restarts}_b"]
        write_run(names[0], [25, 50], finished=True, steps=80, restarts=restarts)
        write_run(names[1], [15], finished=True, steps=80, restarts=restarts)
        out = tmp_path / f"{restarts}.json"
        coverage_script.main([*map(str, names), "--steps", "80", "--peers", "--out", str(out)])
        report = json.loads(out.read_text())
        assert set(report["runs"]) == set(map(str, names))
        check = report["peer_checks"][f"{names[0]} | {names[1]}"]
        assert check["resumes"] == [25, 15] and check["pairs"] == 5  # steps 30..50
        if restarts:
            assert check["r_restarted"] == 1.0 and check["r_continued"] < 0.9
        else:
            assert check["r_continued"] == 1.0 and check["r_restarted"] < 0.9
    same = coverage_script.peer_check({s: (s, 1.0) for s in range(0, 60, 5)}, [20], {}, [20])
    assert same is None  # resumes at one step: the two orders predict the same alignment
