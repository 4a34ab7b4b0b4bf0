"""Write strategies as objects: the registry, and every strategy answering what the name tests did."""

from __future__ import annotations

import pytest
import torch

from deltamem import MissingSegmentsError, preset
from deltamem.config import ConfigError, DeltaMemConfig
from deltamem.scan import delta_scan, read_only
from deltamem.write_strategy import (
    STRATEGIES,
    MultiStateWrite,
    SegmentWrite,
    TokenWrite,
    UnknownWriteStrategyError,
    from_release,
    segment_means,
    write_strategy,
)

NAMES = ("tsw", "ssw", "msw")


# ---------------------------------------------------------------------- the string logic replaced
def old_release_granularity(write: str, unit: str) -> str:
    return {"message": "message_mean", "sentence": "sentence_mean"}[unit] if write == "ssw" else "token"


def old_from_release(granularity: str, heads: int) -> tuple[str, str] | None:
    if granularity == "token":
        return ("msw" if heads > 1 else "tsw"), "message"
    if granularity in ("message_mean", "sentence_mean"):
        return "ssw", granularity.split("_")[0]
    return None


def test_the_registry_resolves_every_name_to_its_class():
    assert tuple(STRATEGIES) == NAMES
    assert [type(write_strategy(n)) for n in NAMES] == [TokenWrite, SegmentWrite, MultiStateWrite]
    assert all(write_strategy(n).name == n for n in NAMES)
    assert write_strategy("ssw") is write_strategy("ssw")  # one object per name
    assert DeltaMemConfig(write="msw").strategy is write_strategy("msw")


@pytest.mark.parametrize("name", ["bogus", "TSW", "", None])
def test_an_unknown_name_is_a_clear_error_listing_the_known_ones(name):
    with pytest.raises(UnknownWriteStrategyError, match="unknown write strategy .*expected one of tsw, ssw, msw"):
        write_strategy(name)
    with pytest.raises(ConfigError, match="expected one of tsw, ssw, msw"):
        DeltaMemConfig(write=name)


@pytest.mark.parametrize("name", NAMES)
def test_each_strategy_answers_as_the_name_tests_did(name):
    strategy = write_strategy(name)
    assert strategy.needs_segments == (name == "ssw")  # lightning, session, evals: `write == "ssw"`
    assert strategy.writes_during_decode == (name != "ssw")  # attach: `write != "ssw"`
    assert preset(name).num_state_heads == strategy.state_heads == {"tsw": 1, "ssw": 1, "msw": 4}[name]
    for unit in ("message", "sentence"):
        assert strategy.release_granularity(unit) == old_release_granularity(name, unit)


@pytest.mark.parametrize("granularity", ["token", "message_mean", "sentence_mean", "span", ""])
@pytest.mark.parametrize("heads", [0, 1, 2, 4])
def test_release_configs_resolve_as_before(granularity, heads):
    found = from_release(granularity, heads)
    expected = old_from_release(granularity, heads)
    assert (None if found is None else (found[0].name, found[1])) == expected


def _inputs(B: int = 2, T: int = 9, H: int = 1, r: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(B, T, 4, H, r, generator=g)
    q, k = torch.nn.functional.normalize(torch.randn(2, B, T, H, r, generator=g), dim=-1)
    v = torch.randn(B, T, H, r, generator=g)
    beta = torch.rand(B, T, H, r, generator=g)
    state = torch.randn(B, H, r, r, generator=g)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, -2:] = False
    return pre, q, k, v, beta, valid, state


def _activate(pre):
    q, k = torch.nn.functional.normalize(torch.tanh(pre[..., :2, :, :]), dim=-1).unbind(-3)
    return q, k, pre[..., 2, :, :], torch.sigmoid(pre[..., 3, :, :])


@pytest.mark.parametrize("name,heads", [("tsw", 1), ("msw", 4)])
def test_token_writes_are_the_scan(name, heads):
    pre, q, k, v, beta, valid, state = _inputs(H=heads)
    reads, new = write_strategy(name).write(pre, q, k, v, beta, valid, state, None, _activate, 4)
    want_reads, want_state = delta_scan(q, k, v, beta, valid, state, chunk_size=4)
    assert torch.equal(reads, want_reads) and torch.equal(new, want_state)


def test_segment_writes_read_the_call_start_state_then_write_each_segment():
    pre, q, k, v, beta, valid, state = _inputs()
    segments = torch.tensor([[-1, 0, 0, 1, 1, 1, 2, 2, -1], [0, 0, 0, 0, 1, 1, 1, 1, 1]])
    ssw = write_strategy("ssw")
    reads, new = ssw.write(pre, q, k, v, beta, valid, state, segments, _activate, 4)
    seg_pre, seg_valid = segment_means(pre, segments, valid)
    _, seg_k, seg_v, seg_beta = _activate(seg_pre)
    _, want = delta_scan(seg_k, seg_k, seg_v, seg_beta, seg_valid, state, chunk_size=4)
    assert torch.equal(reads, read_only(q, state, valid)) and torch.equal(new, want)
    with pytest.raises(MissingSegmentsError, match="segment ids"):
        ssw.write(pre, q, k, v, beta, valid, state, None, _activate, 4)
