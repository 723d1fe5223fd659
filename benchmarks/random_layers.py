"""Randomly drawn decoder layers: an independent check of the lowerings.

``--suite random`` times layers that nobody picked: each is drawn from the
families that transposed convolutions take in decoders, GANs, U-Nets,
vocoders and VAEs, with its batch and spatial size scaled so that one
forward call costs a target number of FLOPs (drawn log-uniformly), i.e. a
few milliseconds on a 2-core CPU. The same ``--layer-seed`` always draws the
same layers, so a run can be repeated and compared.

The families and their weights are fixed here, before any results: changing
them after looking at a run would make the check less independent.
"""

from __future__ import annotations

import math

import numpy as np

from shapes import BenchShape

# (kernel, stride, padding, output_padding) per spatial axis, and where each occurs.
_UPSAMPLING = (
    (2, 2, 0, 0),  # U-Net, k = s
    (4, 2, 1, 0),  # DCGAN / pix2pix
    (3, 2, 1, 1),  # VAE / ResNet decoders, "same"-style ×2
    (5, 2, 2, 1),  # k5 ×2
    (4, 4, 0, 0),  # k = s = 4
    (8, 4, 2, 0),  # k = 2s
)
_STRIDE_ONE = ((3, 1, 1, 0), (5, 1, 2, 0), (7, 1, 3, 0))
_AUDIO = ((4, 2, 1, 0), (8, 4, 2, 0), (10, 5, 3, 1), (16, 8, 4, 0))  # 1d vocoder up-sampling (k = 2s)
_CHANNELS = (16, 32, 64, 128, 256, 512)
_SIDES = {1: (64, 4096), 2: (8, 128), 3: (4, 32)}  # input spatial sizes per rank


def _draw(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _draw_layer(rng: np.random.Generator, index: int) -> BenchShape:
    ndim = int(rng.choice([1, 2, 3], p=[0.25, 0.55, 0.2]))
    family = rng.choice(["upsampling", "stride1", "grouped", "depthwise", "dilated"], p=[0.6, 0.15, 0.08, 0.1, 0.07])
    if ndim == 1 and family == "upsampling":
        kernel, stride, padding, output_padding = _draw(rng, _AUDIO)
    elif family == "stride1":
        kernel, stride, padding, output_padding = _draw(rng, _STRIDE_ONE)
    elif family == "dilated":
        kernel, stride, padding, output_padding = 3, int(rng.integers(1, 3)), 2, 0
    else:
        kernel, stride, padding, output_padding = _draw(rng, _UPSAMPLING)
    if ndim == 3 and kernel > 4:  # 3d decoders keep small kernels
        kernel, stride, padding, output_padding = _draw(rng, _UPSAMPLING[:3])
    dilation = 2 if family == "dilated" else 1
    if family == "dilated" and stride == 2:
        output_padding = 1
    in_channels = _draw(rng, _CHANNELS[: 5 if ndim == 3 else 6])
    if family == "depthwise":
        groups = in_channels
        out_channels = in_channels
    else:
        out_channels = max(8, in_channels // int(rng.choice([1, 2, 4], p=[0.3, 0.55, 0.15])))
        groups = int(rng.choice([4, 8])) if family == "grouped" else 1
        groups = math.gcd(groups, math.gcd(in_channels, out_channels))
    # Scale batch × spatial size to a target cost: log-uniform 60–600 MFLOP
    # (depthwise layers are memory-bound: 2–20 MFLOP).
    low, high = (2e6, 2e7) if family == "depthwise" else (6e7, 6e8)
    target = math.exp(rng.uniform(math.log(low), math.log(high)))
    per_position = 2 * in_channels * (out_channels // groups) * kernel**ndim
    positions = max(1.0, target / per_position)  # N · prod(S)
    batch = int(_draw(rng, (1, 2, 4, 8, 16)))
    smallest, largest = _SIDES[ndim]
    side = 2 ** round(math.log2(max(1.0, positions / batch)) / ndim)  # a power of two, as in real decoders
    side = min(max(side, smallest), largest)
    batch = max(1, min(64, round(positions / side**ndim)))
    name = f"r{index:02d}-{ndim}d-{family}"
    description = f"random {ndim}d {family}"
    return BenchShape(
        name=name,
        description=description,
        x_shape=(batch, in_channels) + (side,) * ndim,
        w_shape=(in_channels, out_channels // groups) + (kernel,) * ndim,
        stride=(stride,) * ndim,
        padding=(padding,) * ndim,
        output_padding=(output_padding,) * ndim,
        dilation=(dilation,) * ndim,
        groups=groups,
        bias=bool(rng.random() < 0.8),
    )


def random_layers(count: int, seed: int) -> tuple[BenchShape, ...]:
    """``count`` layers drawn with ``numpy.random.default_rng(seed)``.

    Every drawn layer is one PyTorch accepts (``output_padding`` smaller
    than the stride or the dilation, channels divisible by ``groups``).
    """
    if count < 1:
        raise ValueError(f"--random-count: must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    return tuple(_draw_layer(rng, i) for i in range(count))
