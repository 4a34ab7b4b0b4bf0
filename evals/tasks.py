"""Hydra tasks of the evaluation side: `task=eval`, `task=table`, `task=compare` and `task=plot`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from deltamem import kernel_choice
from deltamem.errors import UserError
from deltamem.tasks import say
from evals.chat_method import context_window
from evals.fingerprint import check_or_record, eval_fields
from evals.predictions import read_rows
from evals.runner import EvalRunner, Shard, provenance
from evals.tables import build_tables


def rank_device(rank: int, local_rank: str | None, visible: int) -> int:
    """The GPU of an evaluation rank: LOCAL_RANK when a launcher set it (torchrun), else the rank
    modulo the visible GPUs (RANK / WORLD_SIZE set by hand, possibly several ranks per GPU)."""
    index = int(local_rank) if local_rank is not None else rank
    return index % max(1, visible)


def evaluate(
    cfg: DictConfig,
    conditions: Sequence[str] | None = None,
    limit: int | None = None,
    questions_per_call: int = 32,
    progress: bool = True,
    default_run_dir: str | None = None,
    wandb_name: str | None = None,
    logger_run_dir: str | None = None,
) -> dict[str, Any]:
    """`python src/run.py task=eval benchmark=<b> method=<m> [adapter=<folder>] [task.conditions=[...]]`.

    `default_run_dir` is read by Hydra (its run directory) and `wandb_name` by logger=wandb, not here.
    `logger_run_dir`: the folder whose logger run the results join (its stable W&B id); None: this run's."""
    from deltamem.backbones import load_backbone

    shard = Shard.from_env()
    if shard.world_size > 1 and torch.cuda.is_available():  # ranks spread over the visible GPUs
        torch.cuda.set_device(rank_device(shard.rank, os.environ.get("LOCAL_RANK"), torch.cuda.device_count()))
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = check_or_record(run_dir, eval_fields(cfg))  # before anything is loaded or appended
    kernel_choice.configure(**(cfg.get("kernels") or {}))
    torch.manual_seed(cfg.seed)
    benchmark = instantiate(cfg.benchmark.loader)
    data = benchmark.load()  # a missing or malformed data file fails here, before any model is loaded
    loaded = load_backbone(instantiate(cfg.backbone))
    method = instantiate(cfg.method)(loaded=loaded)
    use_decode_loop(method, cfg.get("decoding") or {})
    # prompts that depend on the backbone: LoCoMo paper's truncation, MemoryAgentBench paper's token clip
    fit_to = getattr(benchmark, "fit_to", None)
    if fit_to is not None and loaded.tokenizer is not None:
        fit_to(loaded.tokenizer, context_window(loaded.model), dict(loaded.spec.chat_template_kwargs or {}))
    chosen = list(conditions) if conditions is not None else list(cfg.benchmark.conditions)
    info = {
        "backbone": {"name": loaded.spec.name, "hub_id": loaded.spec.hub_id, "loaded_from": loaded.loaded_from},
        "decoding_note": "per-item settings from the benchmark's protocol (see predictions.jsonl `seed`)",
        "limit": limit,
        "fingerprint": fingerprint,
        "kernels": kernel_choice.effective(),
        **provenance(),
    }
    if shard.rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    runner = EvalRunner(benchmark, method, chosen, run_dir, limit, questions_per_call, shard, progress, info, data)
    results = runner.run()
    if results:
        say(json.dumps({c: round(v["overall"], 2) for c, v in results["conditions"].items()}))
        say(f"results: {run_dir / 'results.json'}")
        for logger_cfg in (cfg.get("logger") or {}).values():
            _log_results(logger_cfg, cfg, results, run_dir, Path(logger_run_dir or run_dir))
    return results


def train_then_evaluate(
    cfg: DictConfig,
    conditions: Sequence[str] | None = None,
    limit: int | None = None,
    questions_per_call: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """`task=train_eval`: train δ-mem into the run folder, then score the new adapter on `benchmark`
    (with `method=deltamem`) into `<run>/eval`. Both halves resume: a finished training is not
    redone, and the evaluation continues its predictions (the ablation sweeps rerun this way)."""
    from deltamem.errors import UserError
    from deltamem.train import train

    if OmegaConf.select(cfg, "method._target_") != "evals.deltamem_method.DeltaMemMethod":
        raise UserError("task=train_eval scores the adapter it trains: add method=deltamem")
    trained = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    scored = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(scored):
        scored.paths.output_dir = str(run_dir / "eval")
        scored.adapter = trained["adapter"]
    # the scores join the training's logger run: a sweep job is one W&B run (config, curves, scores)
    results = evaluate(scored, conditions, limit, questions_per_call, progress, logger_run_dir=str(run_dir))
    summary = {"train": trained, "eval": {c: v["overall"] for c, v in results.get("conditions", {}).items()}}
    (run_dir / "train_eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def use_decode_loop(method: Any, decoding: Any) -> None:
    """Apply config `decoding` (loop, graph_bucket) to the method's decoder; a loop other than
    `auto` for a method that decodes without a `ChatDecoder` is an error."""
    loop = decoding.get("loop", "auto")
    decoder = getattr(method, "decoder", None)
    if decoder is None:
        if loop != "auto":
            raise UserError(f"decoding.loop={loop}: method {getattr(method, 'name', method)} has no chat decoder")
        return
    decoder.use_loop(loop, decoding.get("graph_bucket"))


def _log_results(
    logger_cfg: DictConfig, cfg: DictConfig, results: dict[str, Any], run_dir: Path, identity: Path
) -> None:
    """Mirror the results and predictions into the configured Lightning logger (`evals.wandb_report`);
    the logger run's id comes from the `identity` folder, so a rerun continues the same W&B run."""
    from deltamem.run_logs import instantiate_logger
    from evals.wandb_report import report

    logger = instantiate_logger(logger_cfg, identity)
    report(logger, OmegaConf.to_container(cfg, resolve=True), results, read_rows(run_dir / "predictions.jsonl"))


def table(cfg: DictConfig, runs: str | Sequence[str] = (), out: str | None = None) -> str:
    """`python src/run.py task=table task.runs=<run, sweep folder or glob, or a list> [task.out=...]` →
    Markdown + CSV."""
    from evals.tables import expand_runs

    if not runs:
        raise ValueError("task=table needs run directories: task.runs=<folder, sweep folder or glob> or a list")
    markdown, csv_text = build_tables(expand_runs(runs if isinstance(runs, str) else list(runs)))
    say(markdown)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.md").write_text(markdown + "\n")
        Path(f"{out}.csv").write_text(csv_text)
    return markdown


def _task_out(cfg: DictConfig, out: str | None, stem: str) -> Path:
    """`out` as given, else `<paths.output_dir>/<stem>` (the Hydra run directory)."""
    if out:
        return Path(out)
    return Path(OmegaConf.select(cfg, "paths.output_dir", default=".") or ".") / stem


def compare(
    cfg: DictConfig,
    comparisons: Sequence[Any] = (),
    out: str | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    runs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`python src/run.py task=compare` with `task.comparisons` (conf/task/compare.yaml) →
    a Markdown table of paired Δ with cluster-bootstrap CIs, and `<out>.md/.csv/.json`.
    `runs` only names folders that a preset's comparisons interpolate (conf/task/compare_replication.yaml)."""
    from evals.paired import compare_runs, comparison_tables

    if not comparisons:
        raise ValueError("task=compare needs task.comparisons=[{name, a: {run, condition}, b: {run, condition}}]")
    rows = []
    for spec in comparisons:
        spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
        missing = [k for k in ("name", "a", "b") if k not in spec]
        if missing:
            raise ValueError(f"comparison {spec.get('name', spec)!r} lacks {missing}")
        result = compare_runs(
            spec["a"]["run"],
            spec["a"]["condition"],
            spec["b"]["run"],
            spec["b"]["condition"],
            metric=spec.get("metric"),
            cluster_by=spec.get("cluster", "context_id"),
            exclude_categories=spec.get("exclude_categories"),
            n_boot=n_boot,
            seed=seed,
            ci=ci,
            intersect=bool(spec.get("intersect", False)),
        )
        rows.append({"name": spec["name"], **result})
    markdown, csv_text = comparison_tables(rows)
    say(markdown)
    target = _task_out(cfg, out, "comparisons")
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{target}.md").write_text(markdown + "\n")
    Path(f"{target}.csv").write_text(csv_text)
    Path(f"{target}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def plot(
    cfg: DictConfig,
    bars: Sequence[Any] = (),
    out: str | None = None,
    title: str | None = "No-context recovery",
    metric: str | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    figures: Sequence[Any] = (),
    out_dir: str | None = None,
    runs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]] | dict[str, Any]:
    """`python src/run.py task=plot` (conf/task/plot.yaml). `task.bars` → the no-context recovery
    figure `<out>.png/.svg/.json` (returns its bars). `task.figures`: figures chosen by `_target_`
    (evals/figures*.py), each written to `<figure.out>` or `<out_dir>/<figure.name>` (.png/.svg/.json);
    then returns {name: plotted values} (with `recovery` for `task.bars`). `runs` only names folders
    that a preset's figures interpolate (conf/task/plot_replication.yaml)."""
    from evals.figures import Figure, bar_stats, plot_recovery

    if not bars and not figures:
        raise ValueError("task=plot needs task.bars=[{label, run, condition}, ...] or task.figures=[{_target_: ...}]")
    drawn: dict[str, Any] = {}
    if bars:
        specs = [OmegaConf.to_container(b, resolve=True) if isinstance(b, DictConfig) else dict(b) for b in bars]
        rows = bar_stats(specs, metric=metric, n_boot=n_boot, seed=seed, ci=ci)
        target = _task_out(cfg, out, "recovery")
        plot_recovery(rows, f"{target}.png", title=title)
        Path(f"{target}.json").write_text(json.dumps(rows, indent=2) + "\n")
        for row in rows:
            interval = f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
            say(f"{row['benchmark']:>12} {row['label']:<32} {row['height']:6.2f}  {interval}")
        if not figures:
            return rows
        drawn["recovery"] = rows
    for figure in figures:
        figure = figure if isinstance(figure, Figure) else instantiate(figure)  # a dict with _target_
        if figure.name in drawn:
            raise ValueError(f"task.figures: two figures are named {figure.name!r}")
        stem = Path(figure.out) if figure.out else Path(out_dir) / figure.name if out_dir else None
        stem = stem or _task_out(cfg, None, figure.name)
        stem.parent.mkdir(parents=True, exist_ok=True)
        drawn[figure.name] = figure.render(stem)
        say(f"{figure.kind} figure: {stem}.png, .svg, .json")
    return drawn


def select_replication(
    cfg: DictConfig,
    arms: Mapping[str, str] | None = None,
    require_all: bool = True,
    out: str | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    runs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`python src/run.py task=select_replication` (conf/task/select_replication.yaml): the
    replication's pre-registered dev selection rebuilt from committed run folders, every
    configuration's D with its CI, and the selected one → `<out>.md` and `<out>.json`. `runs` only
    names folders that `arms` interpolates."""
    from evals.replication_selection import selection_table, table_markdown

    if not arms:
        raise ValueError("task=select_replication needs task.arms={configuration: run folder, ...}")
    chosen = selection_table(dict(arms), require_all=require_all, n_boot=n_boot, seed=seed, ci=ci)
    _report(_task_out(cfg, out, "selection"), table_markdown(chosen), chosen)
    return chosen


def replication_verdict(cfg: DictConfig, comparisons: Sequence[str] = (), out: str | None = None) -> dict[str, Any]:
    """`python src/run.py task=replication_verdict 'task.comparisons=[a.json,b.json]'`: the
    pre-registered success rule (evals/replication_verdict.py) over `task=compare` JSON files →
    `<out>.md` and `<out>.json`."""
    from evals.replication_verdict import rows_by_name, verdict, verdict_markdown

    if not comparisons:
        raise ValueError("task=replication_verdict needs task.comparisons=[<comparisons .json from task=compare>, ...]")
    found = verdict(rows_by_name(comparisons))
    _report(_task_out(cfg, out, "verdict"), verdict_markdown(found), found)
    return found


def _report(target: Path, markdown: str, data: Any) -> None:
    """Print a task's Markdown table and write it as `<target>.md`, its data as `<target>.json`."""
    say(markdown)
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{target}.md").write_text(markdown + "\n")
    Path(f"{target}.json").write_text(json.dumps(data, indent=1) + "\n")
