"""Which protocol produced a results file, across the renaming of 2026-12-03 (issue 18).

Since then every results.json of LoCoMo, HotpotQA, GPQA, IFEval and MemoryAgentBench records
`protocol` and `protocol_source` (the spec it follows). Files written before have `protocol` only,
and for these benchmarks their "paper" meant the harness's paraphrase that is now called
"paper_v0" (while "paper" became the δ-mem release's evaluation exactly). `effective_protocol`
gives the name a file's scores belong to, so comparisons and tables never mix the two.
"""

from __future__ import annotations

from typing import Any, Mapping

# (benchmark, protocol as written before protocol_source existed) -> the protocol name it is now
LEGACY_NAMES: dict[tuple[str, str], str] = {
    ("locomo", "paper"): "paper_v0",
    ("hotpotqa", "paper"): "paper_v0",
    ("gpqa", "paper"): "paper_v0",
    ("ifeval", "paper"): "paper_v0",
    # MemoryAgentBench's earlier "paper" (a paraphrased prompt, SQuAD normalisation, 50 default tokens)
    # is not kept as a protocol of its own: files written under it are labelled, not rescored
    ("memory_agent_bench", "paper"): "paper_v0",
}


def effective_protocol(results: Mapping[str, Any]) -> str | None:
    """The protocol a results dict's scores were produced under: its `protocol`, except that a file
    without `protocol_source` (written before 2026-12-03) under a name whose meaning changed maps to
    the name that meaning is kept under (LoCoMo/HotpotQA/GPQA/IFEval/MemoryAgentBench "paper" → "paper_v0")."""
    protocol = results.get("protocol")
    if protocol is None or "protocol_source" in results:
        return protocol
    return LEGACY_NAMES.get((str(results.get("benchmark")), str(protocol)), protocol)


__all__ = ["LEGACY_NAMES", "effective_protocol"]
