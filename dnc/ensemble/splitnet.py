"""SplitNet: S independently initialised members of width ~W/sqrt(S), trained as one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dnc.models import create_model, get_spec, member_config
from dnc.train.losses import EnsembleHow, ensemble_log_probs


class SplitNet(nn.Module):
    """An ensemble of S member networks; `forward` returns the stacked logits (S, B, C)."""

    def __init__(self, members: list[nn.Module], ensemble: EnsembleHow = "logits") -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.ensemble = ensemble

    @property
    def split_factor(self) -> int:
        return len(self.members)

    def forward(self, x: Tensor, k: int | None = None) -> Tensor:
        """Logits of the first k members (default all): (k, B, C).

        `x` is either one batch (B, C, H, W) shared by every member or one view per
        member (S, B, C, H, W), the co-training input.
        """
        members = self.members[: k or len(self.members)]
        if x.dim() == 5:
            return torch.stack([m(view) for m, view in zip(members, x, strict=False)])
        return torch.stack([m(x) for m in members])

    def predict(self, x: Tensor, k: int | None = None) -> Tensor:
        """Ensemble log-probabilities (B, C) of the first k members."""
        return ensemble_log_probs(self(x, k), self.ensemble)


def build_splitnet(
    name: str,
    *,
    split: int,
    num_classes: int,
    in_chans: int,
    image_size: int,
    width: float | None = None,
    dropout: float | None = 0.0,
    divide_dropout: bool = True,
    ensemble: EnsembleHow = "logits",
) -> SplitNet:
    """Divide the registered model `name` into `split` members by the family's rule.

    S=1 is exactly the undivided model. Members draw their initial weights one after the
    other from the global RNG, so they start independently (seed it for reproducibility).
    """
    cfg = member_config(name, width, dropout, split, divide_dropout)
    members = [
        create_model(
            name,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            width=cfg["width"],
            dropout=cfg["dropout"],
        )
        for _ in range(split)
    ]
    return SplitNet(members, ensemble)


def member_summary(name: str, width: float | None, dropout: float | None, split: int) -> dict:
    """Family, undivided and member width/dropout of a division (for `dnc info`)."""
    spec = get_spec(name)
    cfg = member_config(name, width, dropout, split, True)
    return {
        "family": spec.family,
        "width": width if width is not None else spec.default_width,
        "member_width": cfg["width"],
        "member_dropout": cfg["dropout"],
    }
