"""Training with Lightning: every experiment takes a step, runs resume exactly, W&B offline logs,
episodes are built as METHOD.md §6 says, and bad input fails with one line naming the problem."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from deltamem.adapters import adapter_sha256
from deltamem.episodes import IGNORE_INDEX, EpisodeBuilder, EpisodeError, collate_episodes
from deltamem.tiny_tokenizer import build_tiny_tokenizer
from deltamem.train import accumulation_steps, build_model, recent_mean, train

from conftest import REPO_ROOT
from test_param_counts import compose_cfg

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))
QASPER_CHATS = REPO_ROOT / "tests" / "fixtures" / "qasper_chats.jsonl"  # the paper's episodes' schema
TINY_OVERRIDES = [  # shrink any backbone to a CPU-sized random model with the local tokenizer
    "backbone.random_init=true",
    "backbone.device=cpu",
    "backbone.dtype=float32",
    "backbone.tokenizer=local_bpe",
    "backbone.architecture.hidden_size=64",
    "backbone.architecture.intermediate_size=96",
    "backbone.architecture.num_hidden_layers=2",
    "backbone.architecture.num_attention_heads=4",
    "backbone.architecture.num_key_value_heads=2",
    "++backbone.architecture.head_dim=16",
    "backbone.architecture.vocab_size=1024",
    "++backbone.special_token_ids={pad: 0, bos: 0, eos: 2}",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "training.progress_bar=none",
    "training.max_write_length=128",
    "training.max_length=48",
    "training.batch_size=1",
    "training.global_batch_size=2",
    "logger=none",
]


def tiny_training_cfg(tmp_path: Path, *overrides: str):
    return compose_cfg(*TINY_OVERRIDES, f"paths.output_dir={tmp_path}", *overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_takes_a_step(tmp_path, experiment):
    if experiment == "quickstart" or experiment.startswith("replication"):  # offline data: synthetic stands in
        data = ["train_data=synthetic", "train_data.num_episodes=4"]
    else:
        data = [f"train_data.path={QASPER_CHATS}"]
    cfg = tiny_training_cfg(tmp_path, f"experiment={experiment}", *data, "trainer.max_steps=1")
    assert cfg.experiment_name == experiment
    if experiment != "quickstart":  # the paper's recipe
        assert cfg.training.optim.lr == 2e-4 and cfg.trainer.gradient_clip_val == 1.0
        assert cfg.training.optim.warmup_ratio == 0.1
        assert cfg.training.sparsity_weight == (0.0 if experiment.endswith("smollm3") else 0.01)
    result = train(cfg)
    assert result["steps"] == 1 and result["final_loss"] == result["final_loss"]  # a number, not NaN
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter_release" / "delta_mem_adapter.pt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"train/loss", "train/ce", "train/beta_mean", "train/state_norm", "train/lr"} <= set(rows[-1])
    losses = [r["train/loss"] for r in rows]
    assert result["loss_mean_last_50_logged"] == pytest.approx(sum(losses) / len(losses))  # every row, < 50 here
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["trainable_parameters"] > 0 and info["frozen_parameters"] > info["trainable_parameters"]


class SimulatedCrash(RuntimeError):
    pass


class CrashAfter(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"killed at step {self.step}")


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_ends_with_the_same_adapter(tmp_path, workers):
    """With loader workers (the replication's recipe has 4), the workers take their first indices
    before Lightning restores the loop; the data position then comes from the checkpoint."""
    overrides = [
        "~experiment",
        "train_data.num_episodes=12",
        "training.global_batch_size=2",
        "training.checkpoint_every=1",
        "training.optim.lr=5e-3",
        f"training.num_workers={workers}",
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    straight = train(tiny_training_cfg(tmp_path / "straight", *overrides))
    assert straight["steps"] == 6
    crashed_dir = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(tiny_training_cfg(crashed_dir, *overrides), callbacks=[CrashAfter(4)])
    assert (crashed_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (crashed_dir / "adapter").exists()
    resumed = train(tiny_training_cfg(crashed_dir, *overrides))
    assert resumed["steps"] == 6
    # training time adds up over both processes (up to the crashed one's last checkpoint)
    assert straight["segments"] == 1 and 0 < straight["seconds_total"] <= straight["seconds"]
    assert resumed["segments"] == 2 and resumed["seconds_total"] > resumed["seconds"] > 0
    assert resumed["nonfinite_microbatches"] == 0
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(crashed_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert not torch.allclose(a["layers.0.B_o"], torch.zeros_like(a["layers.0.B_o"]))

    # one record per step in both logs, equal to the uninterrupted run's (issue "Nothing lost")
    def jsonl(run):
        return [
            (r["step"], round(r["train/loss"], 5))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        ]

    def csv_rows(run):
        import csv

        with (run / "csv" / "metrics.csv").open() as handle:
            return [(r["step"], r["train/loss"][:7]) for r in csv.DictReader(handle) if r.get("train/loss")]

    assert jsonl(crashed_dir) == jsonl(tmp_path / "straight") and [s for s, _ in jsonl(crashed_dir)] == list(range(7))
    assert csv_rows(crashed_dir) == csv_rows(tmp_path / "straight") and len(csv_rows(crashed_dir)) >= 6
    assert resumed["loss_mean_last_50_logged"] == pytest.approx(straight["loss_mean_last_50_logged"], abs=1e-5)
    checkpoint = torch.load(crashed_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(k.startswith("model.") and "delta_mem" in k for k in checkpoint["state_dict"])  # adapter only
    assert checkpoint["EpisodeDataModule"] == {"epoch": 1, "samples": 0}  # saved at the end of the one epoch


def test_a_checkpoint_without_the_data_position_is_refused_under_workers(tmp_path):
    """A checkpoint from before the data position was saved, resumed with loader workers, would
    restart the data order at sample 0 (sessions 10-12): the first batch refuses it."""
    overrides = [
        "~experiment",
        "train_data.num_episodes=12",
        "training.global_batch_size=2",
        "training.checkpoint_every=1",
        "training.num_workers=2",
        "trainer.max_epochs=1",
    ]
    with pytest.raises(SimulatedCrash):
        train(tiny_training_cfg(tmp_path, *overrides), callbacks=[CrashAfter(3)])
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    # 2 steps × 2 episodes: the crash at step 3 comes before that step's checkpoint
    assert checkpoint.pop("EpisodeDataModule") == {"epoch": 0, "samples": 4}
    torch.save(checkpoint, path)
    refused = r"started at \(epoch, sample\) \(0, 0\) but the restored loop stands at \(0, 4\)"
    with pytest.raises(RuntimeError, match=refused):
        train(tiny_training_cfg(tmp_path, *overrides))


def test_wandb_offline_gets_the_curves_the_config_and_the_parameter_counts(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is an optional logger (the GPU machines run without it)")
    from wandb_offline import offline_env, offline_runs

    offline_env(monkeypatch, tmp_path / "env")
    run_dir = tmp_path / "run"
    cfg = tiny_training_cfg(
        run_dir,
        "~experiment",
        "logger=wandb",
        "logger.wandb.offline=true",
        "train_data.num_episodes=4",
        "trainer.max_steps=2",
    )
    train(cfg)
    (run,) = offline_runs(run_dir / "wandb")
    assert run.finished and (run.group, run.name) == ("adhoc", "tiny-tsw")
    curves = {"train/loss", "train/ce", "train/sparsity", "train/beta_mean", "train/state_norm", "train/lr"}
    assert curves | {"trainer/global_step"} <= run.history_keys()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for name in curves:  # the last value W&B holds is the one metrics.jsonl holds
        assert run.summary[name] == pytest.approx(logged[-1][name], rel=1e-6), name
    info = json.loads((run_dir / "run_info.json").read_text())
    assert run.config["trainable_parameters"] == info["trainable_parameters"] > 0
    assert run.config["frozen_parameters"] == info["frozen_parameters"] > info["trainable_parameters"]
    assert run.config["memory"]["rank"] == cfg.memory.rank and run.config["training"]["optim"]["lr"] == 2e-4
    assert run.config["trainer"]["max_steps"] == 2  # the resolved config, every section


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is an optional logger (the GPU machines run without it)")
    from wandb_offline import offline_env

    from deltamem.run_logs import stable_run_id

    offline_env(monkeypatch, tmp_path / "env")
    overrides = ["~experiment", "logger=wandb", "logger.wandb.offline=true", "train_data.num_episodes=8",
                 "training.global_batch_size=2", "training.checkpoint_every=1", "trainer.max_epochs=1"]
    with pytest.raises(SimulatedCrash):
        train(tiny_training_cfg(tmp_path, *overrides), callbacks=[CrashAfter(2)])
    import wandb

    wandb.finish()  # the crashed process would have ended here
    train(tiny_training_cfg(tmp_path, *overrides))
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    # a folder per process (offline-run-<time>-<id>, "-1" added within one second), one run id:
    # `wandb sync` joins them into one W&B run
    assert len(runs) == 2
    assert {run.name.split("-")[3] for run in runs} == {stable_run_id(tmp_path)}


# ---------------------------------------------------------------------- episodes
CHAT = [
    {"role": "system", "content": "you are a memory."},
    {"role": "user", "content": "alice lives in paris. bob is a pilot!"},
    {"role": "assistant", "content": "okay."},
    {"role": "user", "content": "hello"},
    {"role": "user", "content": "thanks"},  # ChatML renders consecutive user messages: two segments
    {"role": "assistant", "content": "sure"},
    {"role": "user", "content": "where does alice live?"},
    {"role": "assistant", "content": "paris"},
]


def test_episode_parts_segments_and_labels():
    tokenizer = build_tiny_tokenizer()
    episode = EpisodeBuilder(tokenizer, max_write_length=512, max_length=64).build(CHAT)
    write_text = tokenizer.decode(episode.write_ids)
    assert "alice lives in paris" in write_text and "where does alice live" not in write_text
    read_text = tokenizer.decode(episode.read_ids)
    assert "where does alice live" in read_text and "pilot" not in read_text  # history not visible
    labelled = tokenizer.decode([t for t, y in zip(episode.read_ids, episode.labels) if y != IGNORE_INDEX])
    assert labelled == "<|im_start|>assistant\nparis<|im_end|>"  # role header through end of turn
    messages = episode.message_ids.tolist()
    assert messages[0] == -1 and sorted(set(messages)) == [-1, 0, 1, 2, 3, 4]  # system -1, 5 messages
    sentences = episode.sentence_ids.tolist()
    bob = [s for t, s in zip(episode.write_ids.tolist(), sentences) if tokenizer.decode([t]).strip() == "bob"]
    assert bob == [1]  # second sentence of the first user message
    assert max(sentences) == 5


DOCUMENT_CHAT = [  # a history of user-only document chunks, then the question
    {"role": "user", "content": "chunk one about paris."},
    {"role": "user", "content": "chunk two about rome."},
    {"role": "user", "content": "where is the tower?"},
    {"role": "assistant", "content": "paris"},
]
ALTERNATING_ONLY = (  # a template that refuses two messages of one role in a row (Llama-2 style)
    "{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
    "{{ raise_exception('roles must alternate') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_user_only_histories_keep_one_segment_per_message():
    tokenizer = build_tiny_tokenizer()
    builder = EpisodeBuilder(tokenizer, 512, 64)
    system, history, last = builder.split(DOCUMENT_CHAT)
    assert system == [] and [m["content"] for m in history] == ["chunk one about paris.", "chunk two about rome."]
    assert last["question"]["content"] == "where is the tower?"
    episode = builder.build(DOCUMENT_CHAT)
    assert sorted(set(episode.message_ids.tolist())) == [0, 1]  # two SSW segments
    assert "where is the tower" not in tokenizer.decode(episode.write_ids)
    merged = EpisodeBuilder(tokenizer, 512, 64, merge="always")  # the old rule: the run joins the question
    _, history, last = merged.split(DOCUMENT_CHAT)
    assert history == [] and last["question"]["content"].startswith("chunk one about paris.\n\nchunk two")
    with pytest.raises(ValueError, match="merge must be one of"):
        EpisodeBuilder(tokenizer, 512, 64, merge="sometimes")


def test_templates_that_need_alternation_get_merged_history_runs():
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = ALTERNATING_ONLY
    builder = EpisodeBuilder(tokenizer, 512, 64)
    assert not builder.renders_same_role_runs()
    episode = builder.build(CHAT)  # "hello" + "thanks" become one message
    assert sorted(set(episode.message_ids.tolist())) == [-1, 0, 1, 2, 3]
    with pytest.raises(EpisodeError, match="needs alternating roles"):
        builder.build(DOCUMENT_CHAT)  # the question would follow a user message


def test_tail_truncation_and_overflow_error():
    tokenizer = build_tiny_tokenizer()
    full = EpisodeBuilder(tokenizer, 512, 64).build(CHAT)
    cut = EpisodeBuilder(tokenizer, 20, 64).build(CHAT)
    assert cut.truncated_write and torch.equal(cut.write_ids, full.write_ids[-20:])
    with pytest.raises(EpisodeError, match="more than max_write_length=20"):
        EpisodeBuilder(tokenizer, 20, 64, write_overflow="error").build(CHAT)


def test_collation_pads_write_and_read_separately():
    tokenizer = build_tiny_tokenizer()
    builder = EpisodeBuilder(tokenizer, 512, 64)
    short = CHAT[:1] + CHAT[-2:]  # no history at all
    batch = collate_episodes([builder.build(CHAT), builder.build(short)], tokenizer.pad_token_id)
    assert batch["write_input_ids"].shape[0] == 2 and batch["write_attention_mask"][1].sum() == 0
    assert batch["read_input_ids"].shape == batch["labels"].shape
    assert (batch["labels"][batch["read_attention_mask"] == 0] == IGNORE_INDEX).all()


def test_bad_episodes_are_one_line_errors():
    builder = EpisodeBuilder(build_tiny_tokenizer(), 512, 64)
    with pytest.raises(EpisodeError, match="must end with a user question followed by the assistant"):
        builder.build(CHAT[:-1])
    with pytest.raises(EpisodeError, match="without role/content"):
        builder.build([{"role": "user"}, {"role": "assistant", "content": "x"}])


def test_recent_mean_reads_the_last_rows_that_carry_the_key(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "train/loss": float(i)} for i in range(1, 6)] + [{"step": 6}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recent_mean(path, "train/loss", 2) == 4.5  # steps 4 and 5; step 6 has no loss
    assert recent_mean(path, "train/loss", 50) == 3.0
    assert math.isnan(recent_mean(tmp_path / "absent.jsonl", "train/loss", 2))


def test_global_batch_arithmetic():
    assert accumulation_steps(32, 1, 8) == 4 and accumulation_steps(32, 4, 1) == 8
    with pytest.raises(ValueError, match="not divisible"):
        accumulation_steps(32, 3, 1)


def test_quickstart_pipeline_writes_results_and_predictions(tmp_path):
    """The quickstart scores through EvalRunner: two ordinary evaluation runs that task=table reads."""
    from evals.quickstart import quickstart
    from evals.tables import build_tables

    cfg = tiny_training_cfg(
        tmp_path, "experiment=quickstart", "train_data.num_episodes=4", "benchmark.loader.num_episodes=3",
        "benchmark.loader.max_new_tokens=2", "task.batch_size=2",
    )
    summary = quickstart(cfg, **{k: v for k, v in cfg.task.items() if not k.startswith("_")})
    frozen = json.loads((tmp_path / "eval_frozen" / "results.json").read_text())
    memory = json.loads((tmp_path / "eval_deltamem" / "results.json").read_text())
    assert frozen["benchmark"] == memory["benchmark"] == "synthetic"
    assert (frozen["method"], list(frozen["conditions"])) == ("vanilla", ["no_context", "full_context"])
    assert (memory["method"], list(memory["conditions"])) == (
        "deltamem_tsw", ["full_context", "memory_only", "memory_only_wrong_history"])
    assert all(c["n"] == 3 and 0.0 <= c["overall"] <= 1.0 for r in (frozen, memory) for c in r["conditions"].values())
    assert memory["method_cost"]["adapter_sha256"] == adapter_sha256(tmp_path / "adapter")
    assert len((tmp_path / "eval_deltamem" / "predictions.jsonl").read_text().splitlines()) == 3 * 3
    assert summary["train"]["steps"] == 2  # 4 episodes, global batch 2
    markdown, _ = build_tables([tmp_path / "eval_frozen", tmp_path / "eval_deltamem"])
    backbone = frozen["backbone"]["name"]
    assert f"| vanilla | {backbone} | synthetic | no_context |" in markdown
    assert f"| deltamem_tsw | {backbone} | synthetic | memory_only_wrong_history |" in markdown


def test_the_quickstart_is_deterministic(tmp_path, monkeypatch):
    """Two quickstarts of one seed in one process give the same adapter and the same answers (the
    memory's initialisation is seeded with the run, not left to whatever the RNG held after the
    backbone loaded: a GGUF load does not reseed it, as the tiny random backbone does)."""
    import secrets

    import deltamem.train as train_module
    from evals.quickstart import quickstart

    real_load = train_module.load_backbone

    def load_then_move_the_rng(spec):
        loaded = real_load(spec)
        torch.rand(1 + secrets.randbelow(64))  # an unseeded amount, as other work in the process would
        return loaded

    monkeypatch.setattr(train_module, "load_backbone", load_then_move_the_rng)

    def run(folder, seed=0):
        overrides = ["experiment=quickstart", "train_data.num_episodes=4", "benchmark.loader.num_episodes=3",
                     "benchmark.loader.max_new_tokens=2", "task.batch_size=2", f"seed={seed}"]  # fmt: skip
        quickstart(tiny_training_cfg(tmp_path / folder, *overrides), batch_size=2)
        adapter = load_file(tmp_path / folder / "adapter" / "adapter_model.safetensors")
        outputs = [json.loads(line)["output"] for line in (tmp_path / folder / "eval_deltamem" / "predictions.jsonl")
                   .read_text().splitlines()]
        return adapter, outputs

    (a, pa), (b, pb) = run("one"), run("two")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert pa == pb
    c, _ = run("seed1", seed=1)
    assert not torch.equal(a["layers.0.in_proj"], c["layers.0.in_proj"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_trained_model_stays_on_the_gpu(tmp_path):
    """Lightning moves the module to the CPU when fit ends; the quickstart's evaluation after
    training must still run on the GPU it trained on."""
    overrides = ["backbone.device=cuda", "trainer.accelerator=gpu", "train_data.num_episodes=4"]
    cfg = tiny_training_cfg(tmp_path, "experiment=quickstart", *overrides)
    loaded, model = build_model(cfg)
    train(cfg, loaded, model)
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_throughput_recorder_counts_the_tokens_of_timed_steps(tmp_path):
    overrides = ["~experiment", "train_data.num_episodes=8", "trainer.max_steps=4", "training.measure_throughput=true"]
    cfg = tiny_training_cfg(tmp_path / "all", *overrides, "training.throughput_warmup_steps=0")
    loaded, model = build_model(cfg)
    train(cfg, loaded, model)
    report = json.loads((tmp_path / "all" / "throughput.json").read_text())
    assert report["world_size"] == 1 and report["accumulate_grad_batches"] == 2 and report["device_names"] == ["cpu"]
    assert report["optimizer_steps_timed"] == 4 and report["step_seconds_median"] > 0
    builder = EpisodeBuilder(loaded.tokenizer, cfg.training.max_write_length, cfg.training.max_length)
    episodes = [builder.build(record["messages"]) for record in instantiate(cfg.train_data)]
    total = sum(len(e.write_ids) + len(e.read_ids) for e in episodes)  # 4 steps x 2 episodes = all 8, once
    assert report["tokens_per_step"] * 4 == pytest.approx(total)
    assert report["tokens_per_second"] == pytest.approx(total / sum(report["step_seconds"]))
    train(tiny_training_cfg(tmp_path / "warm", *overrides))  # the default excludes the first step
    assert json.loads((tmp_path / "warm" / "throughput.json").read_text())["optimizer_steps_timed"] == 3


def test_deepspeed_zero2_config_keeps_the_paper_batch_and_skips_frozen_weights():
    cfg = compose_cfg("experiment=msw_qwen4b", "trainer=deepspeed_zero2")
    assert cfg.trainer.strategy._target_ == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert cfg.trainer.strategy.stage == 2 and cfg.trainer.strategy.exclude_frozen_parameters is True
    assert cfg.trainer.precision == "bf16-mixed" and cfg.training.global_batch_size == 32
    for devices in (1, 2, 4, 8):
        assert accumulation_steps(cfg.training.global_batch_size, cfg.training.batch_size, devices) * devices == 32


def test_lightning_lines_reach_the_root_logger_once_and_without_the_litlogger_tip():
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from deltamem.run_logs import route_lightning_logs

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = logging.getLogger()
    handler = Collect()
    root.addHandler(handler)
    try:
        route_lightning_logs()
        rank_zero_info("GPU available: False")
        rank_zero_info("💡 Tip: try installing [litlogger](https://pypi.org/project/litlogger/)")
    finally:
        root.removeHandler(handler)
    assert seen == ["GPU available: False"]
    assert not logging.getLogger("lightning.pytorch").handlers and not logging.getLogger("lightning").handlers


def test_the_small_row_runs_the_05b_rows_recipe_on_smollm2():
    """experiment=replication_smollm2 changes the backbone and the run's name, nothing of the recipe."""
    from omegaconf import OmegaConf

    big, small = compose_cfg("experiment=replication_qwen05"), compose_cfg("experiment=replication_smollm2")
    assert (small.backbone.name, small.backbone.dtype, small.experiment_name) == (
        "smollm2_135m", big.backbone.dtype, "replication_smollm2")
    assert small.seed == big.seed == 0
    for section in ("training", "trainer", "train_data", "memory", "task"):
        assert OmegaConf.to_container(small[section]) == OmegaConf.to_container(big[section]), section
