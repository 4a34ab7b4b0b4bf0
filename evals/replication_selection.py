"""The real-data replication's pre-registered selection among its configurations (docs/RESULTS.md).

Dev endpoint D = dev `memory_only` F1 − dev `memory_only_wrong_history` F1 (E2's analogue on the
dev split, `benchmark=episode_qa`). The selected configuration has the highest D; configurations
within `TIE_POINTS` of the best D are tied, and the tie goes to the highest dev `memory_only`.
Only the dev split chooses: no test benchmark is read here.

`scripts/gpu/lanes.py` applies `select_arm` on the GPU machine (its `best:` steps) and
`task=select_replication` rebuilds the choice, with a paired-bootstrap CI for every D, from the
committed run folders, which may sit in different sessions' folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

TIE_POINTS = 1.0  # D within 1 point of the best is a tie, broken by memory_only
DEV = "eval_episode_qa"


def dev_scores(arm_dir: str | Path) -> tuple[float, float] | None:
    """(D, memory_only) of an arm folder's dev evaluation, or None when it has none (yet)."""
    path = Path(arm_dir) / DEV / "results.json"
    if not path.is_file():
        return None
    conditions = json.loads(path.read_text())["conditions"]
    if "memory_only" not in conditions or "memory_only_wrong_history" not in conditions:
        return None
    mine = conditions["memory_only"]["overall"]
    return mine - conditions["memory_only_wrong_history"]["overall"], mine


def select_arm(scored: Mapping[str, tuple[float, float]]) -> str:
    """The arm the rule selects among `scored` (arm → (D, memory_only))."""
    if not scored:
        raise ValueError("no arm has dev results (eval ARM episode_qa) to select from")
    top = max(d for d, _ in scored.values())
    return max((arm for arm, (d, _) in scored.items() if d >= top - TIE_POINTS), key=lambda a: scored[a][1])


def selection_table(arms: Mapping[str, str | Path], require_all: bool = True, **bootstrap: Any) -> dict[str, Any]:
    """Every configuration's dev D with its 95% paired-bootstrap CI (clustered by question), and the
    selected one. arms: configuration name → its run folder. `require_all`: a configuration without
    dev results is an error (the final selection needs every one); otherwise it is listed as missing."""
    from evals.paired import compare_runs

    missing = [name for name, folder in arms.items() if dev_scores(folder) is None]
    if missing and require_all:
        raise ValueError(f"no dev results (<arm>/{DEV}/results.json with memory_only and memory_only_wrong_history)"
                         f" for {missing}; task.require_all=false lists them as missing")
    rows, scored = [], {}
    for name, folder in arms.items():
        scores = dev_scores(folder)
        if scores is None:
            rows.append({"arm": name, "run": str(folder), "missing": True})
            continue
        scored[name] = scores
        run = Path(folder) / DEV
        delta = compare_runs(run, "memory_only", run, "memory_only_wrong_history", **bootstrap)
        rows.append({"arm": name, "run": str(folder), "missing": False, "memory_only": delta["mean_a"],
                     "wrong_history": delta["mean_b"], "D": delta["delta"], "ci_low": delta["ci_low"],
                     "ci_high": delta["ci_high"], "n": delta["n"]})
    selected = select_arm(scored)
    top = max(d for d, _ in scored.values())
    for row in rows:
        if not row["missing"]:
            row["tied_with_best"] = row["D"] >= top - TIE_POINTS
            row["selected"] = row["arm"] == selected
    any_excludes_zero = any(not r["missing"] and r["ci_low"] > 0 for r in rows)
    return {"rule": f"max dev D; D within {TIE_POINTS:g} of the best tied, broken by dev memory_only",
            "selected": selected, "complete": not missing, "missing": missing,
            "some_D_excludes_zero": any_excludes_zero, "arms": rows}


def table_markdown(selection: Mapping[str, Any]) -> str:
    """The selection as a Markdown table (one row per configuration, the selected one in bold)."""
    lines = ["| configuration | memory_only F1 | wrong history F1 | D [95% CI] | tied with best | selected |",
             "|---|---|---|---|---|---|"]
    for row in selection["arms"]:
        if row["missing"]:
            lines.append(f"| {row['arm']} | – | – | (no dev results yet) | – | – |")
            continue
        name = f"**{row['arm']}**" if row["selected"] else row["arm"]
        lines.append(f"| {name} | {row['memory_only']:.2f} | {row['wrong_history']:.2f} | "
                     f"{row['D']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] | "
                     f"{'yes' if row['tied_with_best'] else 'no'} | {'yes' if row['selected'] else ''} |")
    state = "final" if selection["complete"] else f"interim: {len(selection['missing'])} configuration(s) missing"
    lines.append("")
    lines.append(f"Selected: {selection['selected']} ({state}). Rule: {selection['rule']}.")
    return "\n".join(lines)
