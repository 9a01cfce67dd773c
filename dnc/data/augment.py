"""Batched augmentation: V independently augmented views of a whole uint8 batch in a few ops.

The same augmentations as the per-sample torchvision pipeline (`views.build_transform`), drawn
per sample but computed on the whole batch with tensor ops and an explicit `torch.Generator`,
so a batch's views are a pure function of its seed and the work runs on any device.
Measured on 2 CPU cores, one epoch of 10k Fashion-MNIST images x 4 views, batch 128: 0.11 s
(~89,000 images/s) in-process, against 4.4 s (~2,300 images/s; 2 workers: ~3,900) for the
per-sample torchvision transforms - augmentation stays a rounding error next to training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from dnc.config import DataConfig
from dnc.data.autoaugment import per_sample_autoaugment
from dnc.data.registry import DatasetInfo


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run CPU ops on one intra-op thread, restoring the setting after.

    Each op here takes well under a millisecond; splitting it across threads costs more than
    it saves, and when the cores are shared with another process the wait for a descheduled
    thread made a 2-thread epoch 50x slower than a 1-thread one (measured, 2 cores).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def random_pad_crop(images: Tensor, padding: int, g: torch.Generator) -> Tensor:
    """Zero-pad by `padding` and crop back to size at a random offset per sample."""
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p)
    pw = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g, device=dev)
    # One gather over flattened pixels: ~3x faster on CPU than 2-D advanced indexing.
    window = (torch.arange(h, device=dev)[:, None] * pw + torch.arange(w, device=dev)).flatten()
    index = (dy * pw + dx)[:, None] + window  # (N, H*W) flat positions in the padded image
    flat = padded.view(n, c, -1).gather(2, index[:, None, :].expand(n, c, h * w))
    return flat.view(n, c, h, w)


def random_hflip(images: Tensor, g: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each sample left-right with probability `p`."""
    flip = torch.rand(len(images), generator=g, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _boxes(
    n: int,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    g: torch.Generator,
    device: torch.device,
    tries: int = 10,
) -> tuple[Tensor, Tensor, Tensor]:
    """torchvision's box draw, vectorised: first of `tries` (area, aspect) draws that fits.

    Returns box heights, widths (N,) and whether any try fitted.
    """
    area = _uniform(n * tries, *scale, g, device).view(n, tries) * (h * w)
    log_r = _uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), g, device)
    aspect = log_r.exp().view(n, tries)
    bw = (area * aspect).sqrt().round()
    bh = (area / aspect).sqrt().round()
    fits = (bw >= 1) & (bw <= w) & (bh >= 1) & (bh <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try
    return bh.gather(1, first)[:, 0], bw.gather(1, first)[:, 0], fits.any(dim=1)


def random_erasing(
    images: Tensor,
    p: float,
    g: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> Tensor:
    """Zero a random rectangle (`scale` of the area, aspect `ratio`) with probability `p`."""
    n, _, h, w = images.shape
    dev = images.device
    bh, bw, fits = _boxes(n, h, w, scale, ratio, g, dev)
    fits &= (bh < h) & (bw < w)  # torchvision never erases the whole image
    top = (torch.rand(n, generator=g, device=dev) * (h - bh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - bw + 1)).floor()
    apply = (torch.rand(n, generator=g, device=dev) < p) & fits
    ys = torch.arange(h, device=dev)[None, :, None]  # (1, H, 1)
    xs = torch.arange(w, device=dev)[None, None, :]  # (1, 1, W)
    inside = (ys >= top[:, None, None]) & (ys < (top + bh)[:, None, None])
    inside = inside & (xs >= left[:, None, None]) & (xs < (left + bw)[:, None, None])
    return images.masked_fill((inside & apply[:, None, None])[:, None], 0.0)


def random_resized_crop(images: Tensor, hflip: bool, g: torch.Generator) -> Tensor:
    """Crop a random box (8-100 % of the area, aspect 3/4-4/3), resize back, maybe mirror.

    Float input; bilinear resampling through one `grid_sample`, the box and the flip folded
    into a per-sample affine map.
    """
    n, _, h, w = images.shape
    dev = images.device
    bh, bw, fits = _boxes(n, h, w, (0.08, 1.0), (3 / 4, 4 / 3), g, dev)
    bh, bw = torch.where(fits, bh, float(h)), torch.where(fits, bw, float(w))  # fallback: all
    top = (torch.rand(n, generator=g, device=dev) * (h - bh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - bw + 1)).floor()
    sign = torch.ones(n, device=dev)
    if hflip:
        sign = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sign * bw / w
    theta[:, 0, 2] = (2 * left + bw) / w - 1  # box centre in [-1, 1] coordinates
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", align_corners=False)


class BatchViews:
    """uint8 batch (B, C, H, W) -> `num_views` augmented, normalised float32 views (V, B, C, H, W).

    With `train=False` or `augment: none` every view is the normalised image itself; with
    `shared=True` (`split.views: shared`) one augmentation is drawn and every view is a copy;
    `autoaugment` puts every image of every view through its own AutoAugment draw, and
    erasing draws its box from `erasing_scale` / `erasing_ratio`.
    """

    def __init__(
        self,
        info: DatasetInfo,
        cfg: DataConfig,
        num_views: int,
        train: bool = True,
        shared: bool = False,
    ) -> None:
        self.info, self.cfg, self.num_views, self.shared = info, cfg, num_views, shared
        self.augment = train and cfg.augment == "standard"
        self.erasing = cfg.random_erasing if self.augment else 0.0
        self._scale = 1.0 / (255.0 * torch.tensor(info.std))[:, None, None]  # (C, 1, 1)
        self._shift = (255.0 * torch.tensor(info.mean))[:, None, None]

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (..., C, H, W) -> float32 (x / 255 - mean) / std."""
        with _one_thread(images.device):
            return (images.float() - self._shift.to(images.device)) * self._scale.to(images.device)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment `images` (B, C, H, W) into views (V, B, C, H, W) drawn from `generator`.

        `generator` must live on the images' device.
        """
        draws = 1 if self.shared else self.num_views
        with _one_thread(images.device):
            x = self._augment(images.repeat(draws, 1, 1, 1), generator)  # (draws*B, ...)
        x = x.view(draws, len(images), *x.shape[1:])
        return x.repeat(self.num_views, 1, 1, 1, 1) if self.shared else x  # (V, B, C, H, W)

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        autoaugment = self.augment and self.cfg.autoaugment
        if self.augment and self.info.crop_padding > 0:
            x = random_pad_crop(x, self.info.crop_padding, g)  # on uint8: pads are black
            x = random_hflip(x, g) if self.info.hflip else x
            x = self.normalize(per_sample_autoaugment(x, g) if autoaugment else x)
        elif self.augment:
            x = per_sample_autoaugment(x, g) if autoaugment else x
            x = random_resized_crop(self.normalize(x), self.info.hflip, g)
        else:
            x = self.normalize(x)
        if self.erasing <= 0:
            return x
        scale, ratio = self.cfg.erasing_scale, self.cfg.erasing_ratio
        return random_erasing(x, self.erasing, g, scale, ratio)
