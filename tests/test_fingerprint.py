"""Evaluation runs that cannot mix: a run directory records its fingerprint on the first call;
rerunning the same settings continues it, other settings are refused with one line naming the
field; execution settings (batch size, conditions, limit) are not part of the fingerprint."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from evals.fingerprint import (
    RunMismatchError,
    adapter_sha256,
    check_or_record,
    digest,
    eval_fields,
    first_difference,
)
from evals.tasks import evaluate

from conftest import REPO_ROOT

CONF = str(REPO_ROOT / "conf")


def eval_cfg(run_dir, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "~experiment",
                "task=eval",
                "benchmark.loader.num_episodes=4",
                "task.default_run_dir=null",  # it names Hydra's run directory: unresolvable without Hydra running
                "task.wandb_name=null",  # likewise (Hydra's choices)
                f"paths.output_dir={run_dir}",
                *overrides,
            ],
        )


def test_a_rerun_continues_and_another_configuration_is_refused(tmp_path):
    run = tmp_path / "run"
    first = evaluate(eval_cfg(run), conditions=["no_context"], progress=False)
    stored = json.loads((run / "fingerprint.json").read_text())
    assert first["fingerprint"] == stored["digest"] and len(stored["digest"]) == 16
    assert first["kernels"]["scan_family"] == {"value": "auto", "source": "config"}  # what ran, recorded
    rows = (run / "predictions.jsonl").read_text().splitlines()
    # the same settings, one more condition and another batch size: the same run, continued
    again = evaluate(eval_cfg(run, "method.batch_size=2"), conditions=["no_context", "full_context"], progress=False)
    assert again["fingerprint"] == first["fingerprint"]
    assert (run / "predictions.jsonl").read_text().splitlines()[: len(rows)] == rows
    assert again["conditions"]["no_context"] == first["conditions"]["no_context"]
    # a different decoding budget is another run: refused before anything is appended
    before = (run / "predictions.jsonl").read_text()
    with pytest.raises(RunMismatchError, match=r"benchmark\.loader\.max_new_tokens: 8 → 3"):
        evaluate(eval_cfg(run, "benchmark.loader.max_new_tokens=3"), conditions=["no_context"], progress=False)
    assert (run / "predictions.jsonl").read_text() == before
    with pytest.raises(RunMismatchError, match="seed"):
        evaluate(eval_cfg(run, "seed=1"), conditions=["no_context"], progress=False)


def test_fields_leave_out_execution_keys_and_make_paths_portable(tmp_path):
    data = tmp_path / "a" / "locomo10.json"
    data.parent.mkdir()
    data.write_text("[]")
    moved = tmp_path / "b" / "locomo10.json"
    moved.parent.mkdir()
    moved.write_text("[]")
    base = eval_fields(eval_cfg(tmp_path, "method.batch_size=1", f"++benchmark.loader.path={data}"))
    other = eval_fields(eval_cfg(tmp_path, "method.batch_size=7", f"++benchmark.loader.path={moved}"))
    assert digest(base) == digest(other)  # batch size is execution; the same file under another root
    assert base["benchmark"]["loader"]["path"] == "file:locomo10.json:2"
    assert "batch_size" not in base["method"] and "conditions" not in base["benchmark"]
    changed = eval_fields(eval_cfg(tmp_path, "benchmark.loader.facts=3"))
    assert digest(changed) != digest(eval_fields(eval_cfg(tmp_path)))
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 2}}) == "a.b: 1 → 2"
    assert first_difference({"a": 1}, {"a": 1}) is None


def test_adapter_checksum_follows_the_bytes(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"one")
    first = adapter_sha256(folder)
    (folder / "adapter_model.safetensors").write_bytes(b"two")
    assert adapter_sha256(folder) != first and adapter_sha256(None) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        adapter_sha256(tmp_path / "missing")


def test_an_older_run_without_a_fingerprint_is_adopted_with_a_note(tmp_path, capsys):
    (tmp_path / "predictions.jsonl").write_text("")
    fields = {"benchmark": {"name": "x"}}
    assert check_or_record(tmp_path, fields) == digest(fields)
    assert "no fingerprint.json" in capsys.readouterr().err
    with pytest.raises(RunMismatchError, match=r"benchmark\.name"):
        check_or_record(tmp_path, {"benchmark": {"name": "y"}})


def test_the_default_run_directory_follows_the_fingerprint(tmp_path):
    """`task=eval` without hydra.run.dir: the same command twice lands in one folder (continued),
    another configuration in another one."""
    import subprocess
    import sys

    def run(*overrides: str) -> None:
        argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "~experiment", "task=eval", "task.progress=false"]
        argv += ["benchmark.loader.num_episodes=2", "task.conditions=[no_context]", *overrides]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    run()
    run()
    folders = sorted((tmp_path / "outputs" / "eval").iterdir())
    assert [f.name.rsplit("_", 1)[0] for f in folders] == ["synthetic_vanilla_tiny"]  # benchmark, method, backbone
    stored = json.loads((folders[0] / "fingerprint.json").read_text())
    assert folders[0].name.endswith(stored["digest"])
    assert len((folders[0] / "predictions.jsonl").read_text().splitlines()) == 2  # continued, not repeated
    assert '{"no_context": ' in (folders[0] / "run.log").read_text()  # the summary is in the run folder too
    run("benchmark.loader.max_new_tokens=3")
    assert len(list((tmp_path / "outputs" / "eval").iterdir())) == 2
