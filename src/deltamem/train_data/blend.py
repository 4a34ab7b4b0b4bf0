"""A deterministic, shuffled mixture of episode sources (the real-data training blend).

Weight w of a source: each of its episodes is used w times on average. The integer part gives full
passes, each with a fresh draw (distractors, position, prompts: `source.episode(i, draw)`); the
fractional part a seeded subset of one more pass. The order is a seeded shuffle of all entries.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping

from .documents import stable_int


class BlendEpisodes:
    """Mix `sources` (name -> source; Hydra instantiates them recursively) by `weights` (name -> w >= 0;
    None: 1 each). A source with `episode(i, draw)` gets fresh draws on repeats; others repeat as is.
    `num_episodes` truncates the shuffled mixture (None: all of it). The index is built on first use."""

    def __init__(
        self,
        sources: Mapping[str, object],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        num_episodes: int | None = None,
    ) -> None:
        if not sources:
            raise ValueError("sources must name at least one episode source")
        self.sources = {str(k): v for k, v in sources.items()}
        weights = {str(k): float(v) for k, v in (weights or {}).items()}
        unknown = sorted(set(weights) - set(self.sources))
        if unknown:
            raise ValueError(f"weights name unknown sources {unknown}; sources are {sorted(self.sources)}")
        self.weights = {name: weights.get(name, 1.0) for name in self.sources}
        bad = {k: w for k, w in self.weights.items() if not math.isfinite(w) or w < 0}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if num_episodes is not None and int(num_episodes) < 1:
            raise ValueError(f"num_episodes must be None or >= 1, got {num_episodes}")
        self.seed = int(seed)
        self.num_episodes = None if num_episodes is None else int(num_episodes)
        self._index: list[tuple[str, int, int]] | None = None

    def _build(self) -> list[tuple[str, int, int]]:
        if self._index is None:
            index: list[tuple[str, int, int]] = []
            for name, source in self.sources.items():
                n, w = len(source), self.weights[name]  # type: ignore[arg-type]
                full = int(w)
                index += [(name, i, d) for d in range(full) for i in range(n)]
                extra = round((w - full) * n)
                if extra:
                    rng = random.Random(stable_int("deltamem.blend.subset", self.seed, name))
                    index += [(name, i, full) for i in sorted(rng.sample(range(n), extra))]
            random.Random(stable_int("deltamem.blend.order", self.seed)).shuffle(index)
            if self.num_episodes is not None:
                if self.num_episodes > len(index):
                    raise ValueError(
                        f"num_episodes={self.num_episodes} exceeds the blend's {len(index)} episodes; "
                        "raise the weights or lower num_episodes"
                    )
                index = index[: self.num_episodes]
            if not index:
                raise ValueError("the blend is empty: every source is empty or weighted 0")
            self._index = index
        return self._index

    def counts(self) -> dict[str, int]:
        """Episodes per source in the blend."""
        out = dict.fromkeys(self.sources, 0)
        for name, _, _ in self._build():
            out[name] += 1
        return out

    def __len__(self) -> int:
        return len(self._build())

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> dict:
        entries = self._build()
        if not -len(entries) <= index < len(entries):
            raise IndexError(f"episode {index} out of range for {len(entries)} episodes")
        name, i, draw = entries[index]
        source = self.sources[name]
        episode = getattr(source, "episode", None)
        record = episode(i, draw) if callable(episode) else source[i]  # type: ignore[index]
        if not callable(episode) and draw:
            record = {**record, "id": f"{record['id']}#{draw}"}
        return {**record, "meta": {**record["meta"], "blend_source": name, "draw": draw}}

    def __repr__(self) -> str:
        return f"BlendEpisodes(sources={sorted(self.sources)}, weights={self.weights}, seed={self.seed})"
