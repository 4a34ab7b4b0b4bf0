"""deltamem/row_sampling.py: the vectorised per-row selection gives exactly the tokens of the per-row
`torch.multinomial` calls the decoder made before it (so sampled results stay reproducible), keeps
each row independent of its neighbours, and refuses settings of the wrong length."""

from __future__ import annotations

import pytest
import torch

from deltamem.row_sampling import RowSampler, RowSettings, filtered_probs, row_sampler

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def multinomial_oracle(settings: RowSettings, logits_steps: list[torch.Tensor]) -> list[list[int]]:
    """The decoder's former selection: filtered probabilities, then one `multinomial` per sampled row
    from that row's generator (seeded with its seed, or 0), argmax for greedy rows."""
    B, V = logits_steps[0].shape
    device = logits_steps[0].device
    generators = [torch.Generator(device=device).manual_seed(int(s or 0)) if d else None
                  for s, d in zip(settings.seeds, settings.do_sample)]
    temperature = torch.tensor([[max(t, 1e-5)] for t in settings.temperature], device=device)
    top_k = torch.tensor([[k if k > 0 else V] for k in settings.top_k], device=device)
    top_p = torch.tensor([[p] for p in settings.top_p], device=device)
    out = []
    for logits in logits_steps:
        probs = filtered_probs(logits, temperature, top_k, top_p)
        out.append([int(torch.multinomial(probs[i], 1, generator=g)[0]) if g is not None else int(logits[i].argmax())
                    for i, g in enumerate(generators)])
    return out


def random_logits(steps: int, batch: int, vocab: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, vocab, generator=g) * 3 for _ in range(steps)]


@pytest.mark.parametrize("device", DEVICES)  # on CUDA too: the study's LoCoMo tokens must not change
@pytest.mark.parametrize("seed", range(4))
def test_the_vectorised_selection_equals_per_row_multinomial_over_many_steps(seed, device):
    settings = RowSettings(
        do_sample=[True, False, True, True, True],
        temperature=[0.4, 1.0, 1.0, 0.8, 2.0], top_k=[10, 0, 0, 50, 3], top_p=[0.9, 1.0, 1.0, 0.5, 1.0],
        seeds=[42, None, 43, 7, None],  # LoCoMo's paper settings in row 0; a row without a seed draws from 0
    )
    logits = [step.to(device) for step in random_logits(12, 5, 300, seed)]
    sampler = row_sampler(settings, 300, torch.device(device))
    got = [sampler(step).tolist() for step in logits]
    assert got == multinomial_oracle(settings, logits)
    assert len({tuple(row) for row in zip(*got)}) == 5  # the rows differ: the check means something
    assert [step[1] for step in got] == [int(step[1].argmax()) for step in logits]  # the greedy row


def test_a_row_draws_the_same_tokens_whatever_its_neighbours_and_reloading_reseeds():
    logits = random_logits(6, 3, 200, 9)
    both = RowSettings([True, True, False], temperature=[0.7] * 3, top_k=[20] * 3, top_p=[0.95] * 3, seeds=[5, 6, 0])
    alone = RowSettings([True], temperature=[0.7], top_k=[20], top_p=[0.95], seeds=[5])
    sampler = row_sampler(both, 200, torch.device("cpu"))
    together = [sampler(step)[0].item() for step in logits]
    single = row_sampler(alone, 200, torch.device("cpu"))
    assert together == [single(step[:1])[0].item() for step in logits]
    sampler.load(both)  # a new batch with the same seeds starts the same draws again (fixed buffers)
    assert [sampler(step)[0].item() for step in logits] == together


def test_greedy_settings_take_the_argmax_and_draw_nothing():
    sampler = RowSampler(2, 50, torch.device("cpu")).load(RowSettings.greedy(2))
    logits = random_logits(1, 2, 50, 1)[0]
    before = [g.get_state().clone() for g in sampler.generators]
    assert sampler(logits).tolist() == logits.argmax(-1).tolist()
    assert all(torch.equal(b, g.get_state()) for b, g in zip(before, sampler.generators))


def test_settings_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="every list needs 2 entries"):
        RowSettings([True, False], temperature=[0.5])
    with pytest.raises(ValueError, match="RowSampler holds 3 rows, the settings have 2"):
        RowSampler(3, 10, torch.device("cpu")).load(RowSettings.greedy(2))
