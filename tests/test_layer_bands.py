"""`memory.layers` as a depth band (lower / middle / upper third, all) resolved against the backbone."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from deltamem import attach_memory, preset
from deltamem.adapters import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
from deltamem.config import ConfigError, DeltaMemConfig

from conftest import compose_config, tiny_model


@pytest.mark.parametrize(
    "layers, depth, expected",
    [
        ("lower_third", 24, range(0, 8)),
        ("middle_third", 24, range(8, 16)),
        ("upper_third", 24, range(16, 24)),
        ("lower_third", 28, range(0, 9)),
        ("middle_third", 28, range(9, 18)),
        ("upper_third", 28, range(18, 28)),
        ("upper_third", 36, range(24, 36)),
        ("all", 5, range(5)),
        (None, 5, range(5)),
        ([1, 3], 5, (1, 3)),
    ],
)
def test_a_band_resolves_against_the_layer_count(layers, depth, expected):
    assert DeltaMemConfig(layers=layers).layer_indices(depth) == tuple(expected)


def test_the_thirds_cover_every_layer_once():
    for depth in range(3, 40):
        bands = [DeltaMemConfig(layers=b).layer_indices(depth) for b in ("lower_third", "middle_third", "upper_third")]
        assert sum(bands, ()) == tuple(range(depth)) and all(bands)


def test_unknown_bands_and_too_shallow_backbones_are_refused():
    with pytest.raises(ConfigError, match="unknown layers 'top_half'"):
        DeltaMemConfig(layers="top_half")
    with pytest.raises(ConfigError, match="2 decoder layers has no such third"):
        DeltaMemConfig(layers="lower_third").layer_indices(2)


def test_attach_wraps_the_band_and_the_adapter_stores_its_indices(tmp_path):
    model = attach_memory(tiny_model("qwen3", num_hidden_layers=6), preset("tsw", layers="upper_third"))
    assert sorted(model.memory_layers) == [4, 5] and model.memory_config.layers == (4, 5)
    every = attach_memory(tiny_model("qwen3", num_hidden_layers=6), preset("tsw", layers="all"))
    assert sorted(every.memory_layers) == list(range(6)) and every.memory_config.layers is None
    save_adapter(model, tmp_path / "adapter")
    assert read_adapter_config(tmp_path / "adapter").layers == (4, 5)
    again = attach_memory(tiny_model("qwen3", num_hidden_layers=6), preset("tsw", layers="upper_third"))
    load_adapter(again, tmp_path / "adapter")  # the band means the same layers: accepted
    lower = attach_memory(tiny_model("qwen3", num_hidden_layers=6), preset("tsw", layers="lower_third"))
    with pytest.raises(AdapterMismatchError, match=r"missing tensor 'layers\.0\."):
        load_adapter(lower, tmp_path / "adapter")


def test_the_memory_group_takes_a_band_from_the_command_line():
    cfg = compose_config("memory=msw", "memory.layers=middle_third")
    memory = instantiate(cfg.memory)
    assert memory.layers == "middle_third" and memory.layer_indices(24) == tuple(range(8, 16))
    assert memory.to_dict()["layers"] == "middle_third"
    assert DeltaMemConfig.from_dict(memory.to_dict()) == memory
