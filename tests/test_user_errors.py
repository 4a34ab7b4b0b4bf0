"""Errors a person can act on: one line naming the file, the record and the field or the cause, and
exit status 1 (`src/run.py`); DELTAMEM_TRACEBACK=1 gives the traceback back. Below the CLI, each
loader raises a `UserError` with that message."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys

import pytest
import torch

from deltamem import attach_memory, preset
from deltamem.adapters import AdapterFileError, load_adapter, save_adapter, save_release_adapter
from deltamem.errors import UserError
from evals.gpqa import GPQADiamond
from evals.hotpotqa import HotpotQA
from evals.ifeval import IFEval
from evals.locomo import LoCoMo
from evals.types import BenchmarkDataError

from conftest import REPO_ROOT, tiny_model


def run_cli(tmp_path, *overrides: str, traceback: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DELTAMEM_TRACEBACK")}
    if traceback:
        env["DELTAMEM_TRACEBACK"] = "1"
    argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "~experiment", f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run([*argv, *overrides], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_a_truncated_locomo_file_is_one_line_from_the_cli(tmp_path):
    bad = tmp_path / "locomo10.json"
    bad.write_text('[{"sample_id": "conv-1", "conversation": {"speaker_a": "A"')
    done = run_cli(tmp_path, "task=eval", "benchmark=locomo", f"benchmark.loader.source={bad}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {bad}: not valid JSON at line 1") and "truncated?" in lines[-1]
    assert "Traceback" not in done.stderr
    loud = run_cli(tmp_path, "task=eval", "benchmark=locomo", f"benchmark.loader.source={bad}", traceback=True)
    assert loud.returncode != 0 and "BenchmarkDataError" in loud.stderr


@pytest.mark.parametrize("loader", [LoCoMo, HotpotQA])
def test_empty_and_truncated_json_name_the_file(tmp_path, loader):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(BenchmarkDataError, match=f"{empty}: the file is empty"):
        loader(source=str(empty)).load()
    cut = tmp_path / "cut.json"
    cut.write_text('[{"a": 1}, {"b": ')
    with pytest.raises(BenchmarkDataError, match=rf"{cut}: not valid JSON at line 1, column \d+.*truncated"):
        loader(source=str(cut)).load()
    with pytest.raises(BenchmarkDataError, match="not found .*DELTAMEM_DATA_DIR"):
        loader(source=str(tmp_path / "nowhere" / "file.json")).load()


def test_an_ifeval_line_with_a_control_character_names_the_line(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    path.write_text(
        '{"key": 1, "prompt": "ok", "instruction_id_list": [], "kwargs": []}\n{"key": 2, "prompt": "a\tb"}\n'
    )
    with pytest.raises(BenchmarkDataError, match=rf"{path}: line 2: not valid JSON \(Invalid control character"):
        IFEval(source=str(path)).load()


def test_an_empty_gpqa_gz_says_empty_not_missing_columns(tmp_path):
    path = tmp_path / "gpqa_diamond.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("")
    with pytest.raises(BenchmarkDataError, match=f"{path}: the file is empty after decompression"):
        GPQADiamond(source=str(path)).load()
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(BenchmarkDataError, match=f"{broken}: unreadable"):
        GPQADiamond(source=str(broken)).load()


def saved_adapters(tmp_path):
    model = attach_memory(tiny_model("qwen3"), preset("tsw"))
    ours, release = save_adapter(model, tmp_path / "ours"), save_release_adapter(model, tmp_path / "release")
    return model, ours, release


@pytest.mark.parametrize("cut", ["header", "body"])
def test_a_corrupted_safetensors_adapter_names_the_file(tmp_path, cut):
    model, ours, _ = saved_adapters(tmp_path)
    weights = ours / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:6] if cut == "header" else data[: len(data) // 2])
    with pytest.raises(AdapterFileError, match=f"{weights}: not a readable safetensors file"):
        load_adapter(model, ours)


class Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_a_release_pt_with_code_is_refused_without_suggesting_the_unsafe_fix(tmp_path):
    model, _, release = saved_adapters(tmp_path)
    weights = release / "delta_mem_adapter.pt"
    torch.save({"x": Payload()}, weights, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(AdapterFileError) as caught:
        load_adapter(model, release)
    message = str(caught.value)
    assert message == f"{weights}: refused, the pickle holds executable code (only plain tensors are loaded)"
    assert "weights_only=False" not in message
    weights.write_bytes(b"\x80\x02")  # a cut file
    with pytest.raises(AdapterFileError, match="not a readable torch file"):
        load_adapter(model, release)


def test_every_user_error_is_one_kind():
    from deltamem.adapters import AdapterMismatchError
    from deltamem.backbones import BackboneUnavailableError
    from deltamem.episodes import EpisodeError
    from evals.fingerprint import RunMismatchError
    from evals.runner import NoCommonConditionError

    for kind in (AdapterFileError, AdapterMismatchError, BackboneUnavailableError, EpisodeError, BenchmarkDataError,
                 RunMismatchError, NoCommonConditionError):  # fmt: skip
        assert issubclass(kind, UserError), kind


def test_the_data_dir_resolves_against_the_project_from_any_folder(tmp_path):
    """`python /path/to/src/run.py` from elsewhere: paths.data_dir is the project's ../shared/data."""
    env = {k: v for k, v in os.environ.items() if k not in ("DELTAMEM_DATA_DIR", "DELTAMEM_ROOT")}
    argv = [sys.executable, str(REPO_ROOT / "src" / "run.py"), "--cfg", "job", "--resolve"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"root_dir: {REPO_ROOT}\n" in done.stdout and f"data_dir: {REPO_ROOT}/../shared/data\n" in done.stdout


def test_memory_agent_bench_offline_fails_at_once_naming_the_hub_id(monkeypatch):
    from deltamem import backbones
    from evals.memory_agent_bench import MemoryAgentBench

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(
        BenchmarkDataError, match=r"ai-hyz/MemoryAgentBench: the Hugging Face hub is unreachable.*source=<path>"
    ):
        MemoryAgentBench(source="ai-hyz/MemoryAgentBench").load()
