"""The contract between a method and the engine."""

from __future__ import annotations

from torch import Tensor, nn


class Task(nn.Module):
    """A method: owns the inference model and turns one batch into a loss dict.

    `training_step` returns {"loss": scalar to backprop, <part>: scalar tensors to log};
    `eval_logits` returns the logits of every evaluated output (M, B, C) - the members of
    a SplitNet - whose ensemble picks the best epoch. `num_views` is how many augmented
    views of each image the train loader must produce.
    """

    model: nn.Module
    num_views: int = 1

    def training_step(self, views: Tensor, targets: Tensor, epoch: float) -> dict[str, Tensor]:
        raise NotImplementedError

    def eval_logits(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups; the default decays every parameter of the task."""
        return [
            {
                "params": [p for p in self.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]
