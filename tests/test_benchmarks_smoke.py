"""CPU smoke test of benchmarks/: every script's main() on the tiny backbone, tiny sizes, one rep."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import common, decode, eval_path, prefill, scan, train_step  # noqa: E402

QUICK = ["--backbone", "tiny", "--reps", "1", "--warmup", "0"]


def check_results(
    results: dict, benchmark: str, variants: set[str], ratios: set[str], unchecked: frozenset[str] = frozenset()
) -> None:
    assert results["benchmark"] == benchmark
    env = results["env"]
    for key in ("device_name", "torch", "transformers", "date", "command"):
        assert env[key], key
    assert env["command"][0] == f"benchmarks/{benchmark}.py"
    assert results["cases"]
    for item in results["cases"]:
        assert set(item["variants"]) == variants
        for name, stats in item["variants"].items():
            assert stats["status"] == "ok", name
            assert stats["median_s"] > 0 and len(stats["samples_s"]) == 1, name
            assert stats["tokens_per_s"] > 0, name
            assert stats["peak_mb"] is None  # CPU: no peak memory
            assert stats["checked"] == (name not in unchecked), name  # δ-mem runs are always verified
        assert set(item["time_ratios"]) == ratios
        assert all(value is not None and value > 0 for value in item["time_ratios"].values())


def test_prefill(tmp_path):
    out = tmp_path / "prefill.json"
    results = prefill.main([*QUICK, "--lengths", "32", "--json", str(out)])
    check_results(results, "prefill", {"frozen", "deltamem"}, {"deltamem/frozen"}, frozenset({"frozen"}))
    assert results["memory_written"] is True
    assert results["forward_kwargs"] == {"use_cache": False, "logits_to_keep": 1}
    saved = json.loads(out.read_text())
    assert saved["cases"][0]["variants"]["deltamem"] == results["cases"][0]["variants"]["deltamem"]


def test_prefill_ssw_writes_segments():
    results = prefill.main([*QUICK, "--memory", "ssw", "--lengths", "24", "--ssw-segment", "8"])
    assert results["memory"]["write"] == "ssw" and results["memory_written"] is True


def test_decode():
    results = decode.main([*QUICK, "--prompts", "16", "--batch", "2", "--new-tokens", "4"])
    variants = {"frozen_decode", "deltamem_decode", "frozen_generate", "deltamem_generate"}
    ratios = {"deltamem_decode/frozen_decode", "deltamem_generate/frozen_generate"}
    check_results(results, "decode", variants, ratios, frozenset({"frozen_decode"}))
    assert results["memory_written"] == {"deltamem_decode": True, "deltamem_generate": True}
    assert results["cases"][0]["variants"]["frozen_decode"]["tokens"] == 2 * 4


def test_train_step():
    results = train_step.main([*QUICK, "--write", "32", "--read", "8"])
    check_results(
        results, "train_step", {"frozen", "lora", "deltamem"}, {"deltamem/frozen", "lora/frozen", "deltamem/lora"}
    )
    assert results["memory_written"] is True
    counts = results["trainable_parameters"]
    assert counts["deltamem"] > 0 and counts["lora"] == 2 * 2 * 8 * (64 + 64)  # 2 layers, q and o: r(d_in + d_out)


def test_train_step_profile_names_what_deltamem_adds():
    results = train_step.main([*QUICK, "--write", "32", "--read", "8", "--profile"])
    profiled = results["profiles"]["B=1 write=32 read=8"]
    assert {"frozen", "lora", "deltamem", "deltamem-frozen", "lora-frozen", "deltamem-lora"} <= set(profiled)
    for name in ("frozen", "lora", "deltamem"):
        assert profiled[name]["device_ms"] > 0 and profiled[name]["launches"] > 0 and profiled[name]["top"], name
    # δ-mem's write pass and memory ops come on top of the frozen pass: more calls, positive growth listed
    assert profiled["deltamem"]["launches"] > profiled["frozen"]["launches"]
    assert all(ms > 0 for _, _, ms in profiled["deltamem-frozen"]["top"])


def test_train_step_graph_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("the CPU refusal; the CUDA run is test_train_step_graph_on_gpu")
    with pytest.raises(SystemExit, match="--graph needs a CUDA device"):
        train_step.main([*QUICK, "--write", "32", "--read", "8", "--graph"])


@pytest.mark.gpu
@pytest.mark.parametrize("memory", ["tsw", "msw"])
def test_train_step_graph_on_gpu(memory):
    """Each step replayed from a CUDA graph: captured without error, and every replay passed its
    checks (memory written, gradients in every layer, the loss of an eager step)."""
    args = [*QUICK, "--device", "cuda", "--memory", memory, "--write", "64", "--read", "16", "--graph"]
    results = train_step.main(args)
    assert results["graph_errors"] == {}
    eager, graphed = results["cases"]
    assert set(graphed["variants"]) == {"frozen_graph", "lora_graph", "deltamem_graph", "lora"}
    for name in ("frozen_graph", "lora_graph", "deltamem_graph"):
        assert graphed["variants"][name]["status"] == "ok" and graphed["variants"][name]["checked"], name
    assert graphed["time_ratios"]["deltamem_graph/lora_graph"] > 0


def test_scan():
    results = scan.main([*QUICK, "--device", "cpu", "--lengths", "64", "--heads", "1,4", "--chunk-size", "16"])
    variants = {"chunked_fwd", "chunked_fwd_bwd", "reference_fwd", "reference_fwd_bwd"}
    ratios = {"chunked_fwd_bwd/chunked_fwd", "reference_fwd/chunked_fwd", "reference_fwd_bwd/chunked_fwd_bwd"}
    check_results(results, "scan", variants, ratios)
    assert [c["params"]["heads"] for c in results["cases"]] == [1, 4]
    assert results["cases"][0]["params"]["chunk"] == 16


@pytest.mark.parametrize("backbone", ["qwen25_coder_0p5b", "smollm2_135m"])
def test_a_benchmark_gets_the_backbone_as_its_yaml_states_it(backbone):
    """The default task (quickstart) pins `device: cpu, dtype: float32`; none of it reaches a benchmark
    (sessions 12-13 timed the 0.5B on the H200's CPU through that leak)."""
    from omegaconf import OmegaConf

    own = OmegaConf.load(REPO_ROOT / "conf" / "backbone" / f"{backbone}.yaml")
    spec, _ = common.compose_config(eval_path.parse(["--backbone", backbone]))
    assert spec.device == own.device == "auto" and spec.dtype == own.dtype
    options = ["--backbone", backbone, "--device", "cuda:1", "--dtype", "float16"]
    spec, _ = common.compose_config(eval_path.parse(options))
    assert (spec.device, spec.dtype) == ("cuda:1", "float16")


def test_twins_share_weights_and_memory_check_catches_unwritten_state():
    args = prefill.parse(QUICK)
    setup = common.load_setup(args)
    wrapped = common.with_memory(setup)
    assert {id(p) for p in setup.model.parameters()} <= {id(p) for p in wrapped.parameters()}
    assert type(setup.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear  # the backbone stays plain
    with pytest.raises(AssertionError, match="state is None"):
        common.assert_memory_written(wrapped)
    for memory in wrapped.memory_layers.values():
        memory.state = torch.zeros(1, 1, 8, 8)
    with pytest.raises(AssertionError, match="all zeros"):
        common.assert_memory_written(wrapped)
    with torch.no_grad():
        wrapped(input_ids=torch.tensor([[5, 6, 7, 8]]))
    common.assert_memory_written(wrapped)


def test_eval_path_answers_a_conversation_through_both_loops_with_the_same_tokens(tmp_path):
    out = tmp_path / "eval_path.json"
    args = [*QUICK, "--prefix", "96", "--questions", "5", "--tail", "10", "--batch", "1,4", "--new-tokens", "4",
            "--chunk", "64", "--json", str(out)]
    results = eval_path.main(args)
    names = {"frozen_eager", "frozen_graph", "deltamem_eager", "deltamem_graph"}
    ratios = {"deltamem_graph/frozen_graph", "deltamem_eager/frozen_eager", "frozen_graph/frozen_eager",
              "deltamem_graph/deltamem_eager"}
    check_results(results, "eval_path", names, ratios)
    for item in results["cases"]:
        batch = item["params"]["batch"]
        for name, stats in item["variants"].items():
            assert stats["questions_per_s"] > 0
            assert stats["loops_used"] == {name.split("_")[1]: -(-5 // batch)}  # every batch, through its loop
    written = json.loads(out.read_text())
    assert "partial" not in written and len(written["cases"]) == 2  # the whole report replaced the partial one
    params = {"batch": 1, "prefix": 96, "questions": 5, "new_tokens": 4, "sampled": False}
    assert written["cases"][0]["params"] == params


def test_eval_path_checks_sampled_answers_between_the_loops_too(tmp_path):
    """--sample: LoCoMo's paper decoding (per-question seeds); the graph variants must still match."""
    results = eval_path.main([*QUICK, "--prefix", "48", "--questions", "3", "--tail", "6", "--batch", "3",
                              "--new-tokens", "4", "--sample"])
    (item,) = results["cases"]
    assert item["params"]["sampled"] is True
    assert all(stats["status"] == "ok" and stats["checked"] for stats in item["variants"].values())


def test_eval_path_fails_when_the_graph_loop_changes_an_answer(monkeypatch):
    from deltamem import decode_loops

    select = decode_loops.StaticLoop._select

    def off_by_one(self, logits):  # a "faster" loop that picks the runner-up token
        return select(self, logits.scatter(-1, logits.argmax(-1, keepdim=True), float("-inf")))

    monkeypatch.setattr(decode_loops.StaticLoop, "_select", off_by_one)
    with pytest.raises(AssertionError, match="frozen_graph: 5 of 5 answers differ from frozen_eager's"):
        eval_path.main([*QUICK, "--prefix", "64", "--questions", "5", "--tail", "6", "--batch", "4",
                        "--new-tokens", "3"])


def test_eval_path_keeps_each_finished_case_when_a_later_one_is_stopped(tmp_path, monkeypatch):
    out = tmp_path / "eval_path.json"
    measured = eval_path.measure_interleaved
    calls = []

    def stopped_at_the_second(*args, **kwargs):  # the device's time limit, say
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return measured(*args, **kwargs)

    monkeypatch.setattr(eval_path, "measure_interleaved", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        eval_path.main([*QUICK, "--prefix", "64", "--questions", "3", "--tail", "6", "--batch", "1,3",
                        "--new-tokens", "2", "--json", str(out)])
    kept = json.loads(out.read_text())
    assert kept["partial"] is True and [c["params"]["batch"] for c in kept["cases"]] == [1]


def test_eval_path_refuses_ssw_by_name():
    with pytest.raises(SystemExit, match="SSW writes need chat prompts"):
        eval_path.main([*QUICK, "--memory", "ssw"])
