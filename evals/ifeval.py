"""IFEval: 541 prompts with verifiable instructions, scored by lm-evaluation-harness's own checkers.

Data: a local JSONL (or JSON list) with `key, prompt, instruction_id_list, kwargs` (the official
`ifeval_input_data.jsonl`), or the hub id `google/IFEval` (through `datasets`). No contexts: the
prompt is one user turn under every condition. Protocols (`protocol_source` names each):
- "paper": the δ-mem release (PAPER_PROTOCOL.md §3): the user turn is `prompt.strip()` (4 of the 541
  prompts carry surrounding whitespace) and the checkers get the unstripped prompt; greedy, 1,500
  new tokens. The release also tidies malformed ids and kwargs for the checkers; here a malformed
  record is refused at load instead (`item_from_record`), so valid data reaches them as it is.
  The release's `langdetect` shim stands in for langdetect in the three checkers that call it
  (`language:response_language`, `change_case:english_capital` / `english_lowercase`: 95 prompts;
  `evals.ifeval_language_shim`, its tables `language_shim` in the config).
- "paper_v0": what "paper" named until 2026-12-03: the raw prompt as the user turn and real
  langdetect, otherwise the same (the replication study's IFEval rows).
- "official": lm-eval's `ifeval.yaml`: the raw prompt, greedy, 1,280 new tokens.
Each protocol's rule, budget and source are data: `loader.prompts` in conf/benchmark/ifeval.yaml.

Scoring calls `lm_eval.tasks.ifeval.utils.test_instruction_following_strict` / `_loose` (its
instruction registry, `langdetect` or the shim, and `nltk`). Importing `lm_eval.tasks` would build the task
registry (datasets, evaluate, ...), so `load_checkers` imports only the `lm_eval/tasks/ifeval/*`
modules, after making NLTK's `punkt_tab` available offline (`evals.nltk_data`) — lm-eval otherwise
tries to download it at import. `score` gives fractions in [0, 1]; `aggregate` and
`PAPER_NUMBERS` are percentages.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from evals.benchmark_base import BenchmarkBase
from evals.conditions import PROMPT_CONDITIONS
from evals.data_files import looks_like_a_path, missing_file, read_json
from evals.ifeval_language_shim import LanguageShim, shimmed_langdetect
from evals.nltk_data import ensure_punkt_tab
from evals.templates import protocol_prompts, protocols_of
from evals.types import BenchmarkDataError, Context, Generation, Item

HUB_ID = "google/IFEval"
CONDITIONS = PROMPT_CONDITIONS  # every condition prompts alike: IFEval has no history
REQUIRED = ("source", "strip_prompt", "max_new_tokens", "language_shim")  # per protocol: conf/benchmark/ifeval.yaml
METRICS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")
CHECKERS_MODULE = "lm_eval.tasks.ifeval.utils"

# The δ-mem paper's IFEval prompt-level accuracy (%), Qwen3-4B-Instruct-2507. The paper does not say
# strict or loose; `overall` is compared against prompt-level strict, lm-eval's headline metric.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "frozen": {"overall": 81.89},
    "tsw": {"overall": 82.99},
}

_checkers: ModuleType | None = None


def _import_without_task_registry() -> ModuleType:
    """A private copy of lm_eval's ifeval modules, imported with `lm_eval.tasks.__init__` (the task registry) skipped.

    Bare stand-ins for `lm_eval.tasks` / `lm_eval.tasks.ifeval` exist only during the import; afterwards
    `sys.modules` holds no `lm_eval.tasks*` entry from here, so the real package still imports normally.
    """
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("IFEval scoring needs lm-evaluation-harness: pip install lm-eval")
    root = Path(next(iter(spec.submodule_search_locations)))
    folder = root / "tasks" / "ifeval"
    if not (folder / "utils.py").is_file():
        raise ImportError(f"{folder} has no utils.py: this lm-eval release lacks the IFEval task")
    lm_eval = importlib.import_module("lm_eval")  # its __init__ is light (version, lazy evaluator)
    stubs: dict[str, ModuleType] = {}
    for name, path in (("lm_eval.tasks", folder.parent), ("lm_eval.tasks.ifeval", folder)):
        stub = ModuleType(name)
        stub.__path__ = [str(path)]
        stub.__package__ = name
        stubs[name] = sys.modules[name] = stub
    before = set(sys.modules)
    try:
        return importlib.import_module(CHECKERS_MODULE)
    finally:  # keep a private copy: a later `import lm_eval.tasks...` imports the real package afresh
        for name in set(sys.modules) - before:
            if name.startswith("lm_eval.tasks."):
                del sys.modules[name]
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]
        if getattr(lm_eval, "tasks", None) is stubs["lm_eval.tasks"]:
            delattr(lm_eval, "tasks")


def load_checkers(nltk_data: str | Path | None = None) -> ModuleType:
    """lm_eval's `lm_eval.tasks.ifeval.utils` (strict/loose checkers), with punkt_tab ensured first.

    `nltk_data`: where to build punkt_tab (default: tables NLTK already finds, else
    `evals.nltk_data.default_root()`). langdetect gets a fixed seed (0) unless one is set, so
    language checks are reproducible.
    """
    global _checkers
    ensure_punkt_tab(nltk_data)
    if _checkers is None:
        if CHECKERS_MODULE in sys.modules or "lm_eval.tasks" in sys.modules:
            module = importlib.import_module(CHECKERS_MODULE)
        else:
            module = _import_without_task_registry()
        import langdetect

        if langdetect.DetectorFactory.seed is None:
            langdetect.DetectorFactory.seed = 0
        _checkers = module
    return _checkers


def item_from_record(record: Any, where: str) -> Item:
    """One validated IFEval record as an Item (ids and kwargs in meta); `where` names it in errors."""
    if not isinstance(record, dict):
        raise BenchmarkDataError(f"{where}: expected an object, got {type(record).__name__}")
    for field in ("key", "prompt", "instruction_id_list", "kwargs"):
        if record.get(field) is None:
            raise BenchmarkDataError(f"{where}: missing field {field!r}")
    ids, kwargs = record["instruction_id_list"], record["kwargs"]
    if not isinstance(record["prompt"], str) or not record["prompt"].strip():
        raise BenchmarkDataError(f"{where}: field 'prompt' is not a non-empty string")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BenchmarkDataError(f"{where}: field 'instruction_id_list' is not a non-empty list of strings")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise BenchmarkDataError(f"{where}: field 'kwargs' is not a list of {len(ids)} objects")
    meta = {"key": record["key"], "instruction_id_list": list(ids), "kwargs": [dict(k) for k in kwargs]}
    return Item(id=str(record["key"]), question=record["prompt"], answers=[], meta=meta)


class IFEval(BenchmarkBase):
    """IFEval under lm-eval's strict and loose checkers (see the module docstring)."""

    name = "ifeval"

    def __init__(
        self,
        source: str = HUB_ID,
        protocol: str = "paper",
        split: str = "train",
        limit: int | None = None,
        nltk_data: str | Path | None = None,
        max_new_tokens: int | None = None,
        prompts: Mapping[str, Any] | None = None,
    ) -> None:
        """prompts: each protocol's set (`source`, `strip_prompt`, `max_new_tokens`), as the config's
        `loader.prompts`; None reads them from conf/benchmark/ifeval.yaml."""
        known = tuple(prompts) if prompts is not None else protocols_of(self.name)
        if protocol not in known:
            raise ValueError(f"unknown IFEval protocol {protocol!r} (expected one of {known})")
        self.source = str(source)
        self.protocol = protocol
        self.templates = protocol_prompts(self.name, protocol, prompts, REQUIRED)
        self.protocol_source = str(self.templates["source"])
        self.strip_prompt = bool(self.templates["strip_prompt"])
        shim = self.templates["language_shim"]  # the release's langdetect stand-in ("paper"), or None: real langdetect
        self.language_shim = None if shim is None else LanguageShim(shim)
        # the decoding budget: the protocol's (paper 1,500, official 1,280) unless set
        budget = self.templates["max_new_tokens"] if max_new_tokens is None else max_new_tokens
        self.max_new_tokens = int(budget)
        self.split = split
        self.limit = None if limit is None else int(limit)
        self.nltk_data = nltk_data

    # ----------------------------------------------------------------- loading
    def _records(self) -> tuple[str, list[Any]]:
        path = Path(self.source).expanduser()
        if path.exists():
            records = read_json(path)
            if not isinstance(records, list):
                raise BenchmarkDataError(f"{path}: expected a JSON list of prompts, got {type(records).__name__}")
            return str(path), records
        if looks_like_a_path(self.source):
            raise missing_file(self.source, "IFEval")
        import datasets  # only for hub ids; tests never get here

        try:
            rows = datasets.load_dataset(self.source, split=self.split)
        except Exception as error:  # offline hub, missing id, ...
            raise RuntimeError(
                f"could not load {self.source!r} (split {self.split!r}) from the Hugging Face hub: {error}. "
                "Offline, pass the official ifeval_input_data.jsonl (e.g. ../shared/data/) as the source."
            ) from error
        return f"{self.source}[{self.split}]", [dict(row) for row in rows]

    def load(self) -> tuple[list[Context], list[Item]]:
        """No contexts; one item per prompt, instruction ids checked against lm-eval's registry."""
        origin, records = self._records()
        if self.limit is not None:
            records = records[: self.limit]
        registry = load_checkers(self.nltk_data).instructions_registry.INSTRUCTION_DICT
        items: list[Item] = []
        seen: set[str] = set()
        for index, record in enumerate(records):
            where = f"{origin}: record {index}"
            item = item_from_record(record, where)
            if item.id in seen:
                raise BenchmarkDataError(f"{where}: repeats key {item.id!r}")
            seen.add(item.id)
            unknown = [i for i in item.meta["instruction_id_list"] if i not in registry]
            if unknown:
                raise BenchmarkDataError(f"{where} ({item.id}): unknown instruction id(s) {unknown}")
            items.append(item)
        return [], items

    # ----------------------------------------------------------------- prompting
    def prompt(self, item: Item, context: Context | None, condition: str) -> list[dict[str, str]]:
        """The prompt (stripped under "paper") as a single user turn, whatever the condition."""
        self.prompt_layout(condition)
        text = item.question.strip() if self.strip_prompt else item.question
        return [{"role": "user", "content": text}]

    def generation(self, item: Item) -> Generation:
        """Greedy; 1,500 new tokens ("paper") or 1,280 ("official")."""
        return Generation(max_new_tokens=self.max_new_tokens, do_sample=False)

    # ----------------------------------------------------------------- scoring
    def follow(self, output: str, item: Item) -> dict[str, list[bool]]:
        """Per-instruction booleans from lm-eval's strict and loose checkers (in `instruction_id_list` order)."""
        checkers = load_checkers(self.nltk_data)
        example = checkers.InputExample(
            key=item.meta["key"],
            instruction_id_list=item.meta["instruction_id_list"],
            prompt=item.question,
            kwargs=item.meta["kwargs"],
        )
        with shimmed_langdetect(checkers.instructions_registry.instructions, self.language_shim):
            strict = checkers.test_instruction_following_strict(example, output)
            loose = checkers.test_instruction_following_loose(example, output)
        return {
            "strict": [bool(x) for x in strict.follow_instruction_list],
            "loose": [bool(x) for x in loose.follow_instruction_list],
        }

    def score(self, output: str, item: Item) -> dict[str, float]:
        """Prompt-level (all instructions followed) and instruction-level (fraction) strict/loose.

        `n_inst` (the prompt's instruction count) lets `aggregate` weight instruction-level means.
        """
        followed = self.follow(output, item)
        strict, loose = followed["strict"], followed["loose"]
        return {
            "prompt_strict": float(all(strict)),
            "prompt_loose": float(all(loose)),
            "inst_strict": sum(strict) / len(strict),
            "inst_loose": sum(loose) / len(loose),
            "n_inst": float(len(strict)),
        }

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Prompt-level means and instruction-weighted instruction-level means (%); `overall` = prompt strict."""
        for index, row in enumerate(rows):
            missing = [key for key in (*METRICS, "n_inst") if key not in row]
            if missing:
                raise ValueError(f"IFEval row {index} lacks {missing} (rows come from IFEval.score)")
        n_inst = sum(float(row["n_inst"]) for row in rows)

        def prompt_mean(key: str) -> float:
            return 100.0 * sum(float(row[key]) for row in rows) / len(rows) if rows else 0.0

        def inst_mean(key: str) -> float:
            return 100.0 * sum(float(row[key]) * float(row["n_inst"]) for row in rows) / n_inst if n_inst else 0.0

        result = {
            "prompt_strict": prompt_mean("prompt_strict"),
            "prompt_loose": prompt_mean("prompt_loose"),
            "inst_strict": inst_mean("inst_strict"),
            "inst_loose": inst_mean("inst_loose"),
        }
        return {
            "overall": result["prompt_strict"],
            **result,
            "n": len(rows),
            "n_instructions": int(round(n_inst)),
            "protocol": self.protocol,
            "protocol_source": self.protocol_source,
        }

