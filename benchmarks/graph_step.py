"""A whole training step (forward + backward) captured once as a CUDA graph and replayed.

The episode step of δ-mem is bound by the host (session-5 profile in benchmarks/RESULTS.md: its
device time is below the LoRA step's, its launch count 2.2× LoRA's). Replaying the step from a
CUDA graph removes the per-launch host cost; `train_step.py --graph` times frozen, LoRA and δ-mem
steps replayed this way, side by side.

Capture follows PyTorch's whole-network recipe: a few eager warm-up steps on a side stream
(Triton compiles, cuBLAS picks its workspaces), gradients set to None, then one captured step, in
which backward allocates every `.grad` from the graph's pool. Each replay rewrites those same
tensors (no accumulation) and the step's returned tensors. All graphs of one benchmark share one
memory pool: they are replayed one after another, never concurrently, and what each keeps alive
(its gradients, outputs, memory state) is never handed to another.

A step must be capturable: static input tensors, no host read of a device value (`.item()`,
`bool(t)`, `torch.unique` — SSW's segment write does this, so SSW cannot be captured), no
host-to-device copy of a Python value.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


def first_tensor(output: Any) -> Tensor:
    """The step's loss: its output, or the first element of a tuple output."""
    return output[0] if isinstance(output, (tuple, list)) else output


class GraphedStep:
    """`step()` captured as a CUDA graph; calling the object replays it and returns step's output.

    `prepare()` runs (eagerly, untimed) before every warm-up step and before the capture: reset what
    the step must find fresh (memory state, gradients). What `step()` allocates itself (e.g. a state
    created from zeros when none is held) is part of the graph and recreated by every replay.
    `params` are the tensors whose `.grad` the step fills; `restore_grads()` points their `.grad`
    back at the captured tensors (another variant may have replaced them in between).
    """

    def __init__(
        self,
        step: Callable[[], Any],
        params: list[Tensor],
        prepare: Callable[[], None] = lambda: None,
        warmup: int = 2,
        pool: Any = None,
    ):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA graphs need a CUDA device")
        self.params = params
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                prepare()
                self.eager_output = step()  # the last one is what a replay must reproduce
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        prepare()
        for param in params:
            param.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = step()
        self.grads = [param.grad for param in params]
        missing = sum(grad is None for grad in self.grads)
        if missing:
            raise RuntimeError(f"the captured step left {missing} of {len(params)} gradients unset")

    @property
    def pool(self) -> Any:
        """The graph's memory pool, to share with the graphs captured after this one."""
        return self.graph.pool()

    def replay_matches_eager(self, output: Any, rtol: float = 1e-3) -> float:
        """Relative difference of the replay's first output tensor (the loss) from the last eager
        warm-up's; raises AssertionError above `rtol`."""
        got, want = (first_tensor(x).detach().double() for x in (output, self.eager_output))
        diff = float((got - want).norm() / want.norm().clamp_min(1e-30))
        if not diff <= rtol:
            raise AssertionError(f"graph replay differs from the eager step: relative difference {diff:.2e}")
        return diff

    def restore_grads(self) -> None:
        """Point every parameter's `.grad` at the tensor the replays write."""
        for param, grad in zip(self.params, self.grads):
            param.grad = grad

    def __call__(self, _: Any = None) -> Any:
        self.graph.replay()
        return self.output
