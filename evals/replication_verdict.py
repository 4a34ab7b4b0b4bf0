"""The real-data replication's pre-registered success rule, applied to its comparison rows.

docs/RESULTS.md (pre-registration, session 8): "E1 and E2 > 0 with the CI excluding 0 on at least
one benchmark, E3 not below 0, IFEval within 2 points of frozen". Each part read mechanically
(the reading was written down in session 13, before any seed-1/2 run):

* **claim** (E1 and E2): on HotpotQA EM or on LoCoMo F1, both Δ have their 95% CI above 0
  (`ci_low > 0`), on the same benchmark;
* **E3 not below 0**: on every benchmark where E3 was measured, its CI is not entirely below 0
  (`ci_high >= 0`); HotpotQA's E3 must be there;
* **no harm** (IFEval prompt-level strict): Δ ≥ −2 points (the point estimate; a gain is no harm).

The rule is met when all three hold; "not met" as soon as one fails, whatever is still missing;
"incomplete" when none fails but a needed row is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

CLAIM_BENCHMARKS = {"HotpotQA": ("E1 HotpotQA EM", "E2 HotpotQA EM"), "LoCoMo": ("E1 LoCoMo F1", "E2 LoCoMo F1")}
E3_ROWS = ("E3 HotpotQA EM", "E3 LoCoMo F1")
E3_REQUIRED = ("E3 HotpotQA EM",)
IFEVAL_ROW = "no-harm IFEval prompt strict"
HARM_POINTS = 2.0


def rows_by_name(files: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """The comparison rows of `task=compare` JSON files, by name; a name in two files is an error."""
    rows: dict[str, dict[str, Any]] = {}
    for file in files:
        for row in json.loads(Path(file).read_text()):
            if row["name"] in rows:
                raise ValueError(f"comparison {row['name']!r} appears twice (again in {file})")
            rows[row["name"]] = row
    return rows


def _status(passed: bool | None) -> str:
    return "missing" if passed is None else "pass" if passed else "fail"


def verdict(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each part of the rule (pass / fail / missing, with the numbers behind it) and the result."""
    claim = {}
    for benchmark, names in CLAIM_BENCHMARKS.items():
        present = [rows[n] for n in names if n in rows]
        passed = None if len(present) < len(names) else all(r["ci_low"] > 0 for r in present)
        claim[benchmark] = {"status": _status(passed),
                            "rows": {r["name"]: [r["delta"], r["ci_low"], r["ci_high"]] for r in present}}
    statuses = [c["status"] for c in claim.values()]
    claim_status = "pass" if "pass" in statuses else "missing" if "missing" in statuses else "fail"
    e3 = {}
    for name in E3_ROWS:
        found = rows.get(name)
        e3[name] = {"status": "missing" if found is None else _status(found["ci_high"] >= 0),
                    "delta_ci": None if found is None else [found["delta"], found["ci_low"], found["ci_high"]]}
    e3_states = [e3[n]["status"] for n in E3_ROWS if e3[n]["status"] != "missing" or n in E3_REQUIRED]
    e3_status = "fail" if "fail" in e3_states else "missing" if "missing" in e3_states else "pass"
    harm = rows.get(IFEVAL_ROW)
    harm_status = "missing" if harm is None else _status(harm["delta"] >= -HARM_POINTS)
    parts = {"claim": claim_status, "e3_not_below_0": e3_status, "ifeval_no_harm": harm_status}
    result = ("not met" if "fail" in parts.values() else "incomplete" if "missing" in parts.values() else "met")
    return {"result": result, "parts": parts, "claim": claim, "e3": e3,
            "ifeval": None if harm is None else [harm["delta"], harm["ci_low"], harm["ci_high"]],
            "rule": "evals/replication_verdict.py"}


def verdict_markdown(found: Mapping[str, Any]) -> str:
    lines = [f"**Success rule: {found['result']}.**", "", "| part | status | numbers (Δ [95% CI]) |", "|---|---|---|"]
    for benchmark, part in found["claim"].items():
        numbers = "; ".join(f"{n}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for n, (d, lo, hi) in part["rows"].items())
        lines.append(f"| E1 and E2 above 0 on {benchmark} | {part['status']} | {numbers or '–'} |")
    for name, part in found["e3"].items():
        numbers = "–" if part["delta_ci"] is None else "{:+.2f} [{:+.2f}, {:+.2f}]".format(*part["delta_ci"])
        lines.append(f"| {name} not below 0 | {part['status']} | {numbers} |")
    ifeval = "–" if found["ifeval"] is None else "{:+.2f} [{:+.2f}, {:+.2f}]".format(*found["ifeval"])
    lines.append(f"| IFEval within {HARM_POINTS:g} points (Δ ≥ −{HARM_POINTS:g}) | {found['parts']['ifeval_no_harm']} "
                 f"| {ifeval} |")
    return "\n".join(lines)
