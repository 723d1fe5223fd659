"""The benchmark suite's layers: one transposed convolution each, in PyTorch terms.

Each :class:`BenchShape` is one ``torch.nn.functional.conv_transpose{1,2,3}d``
call: input ``x`` of shape ``(N, Cin, *S)``, weight ``(Cin, Cout // groups, *K)``
and the keyword arguments ``stride``, ``padding``, ``output_padding``,
``dilation`` and ``groups``. Batch sizes are chosen so that one forward call
takes roughly 1–50 ms on a 2-core CPU with torch 2.13.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class BenchShape:
    """One benchmarked layer.

    Attributes:
      name: short identifier used by ``--shapes``.
      description: what the layer is, for the table.
      x_shape: ``(N, Cin, *S)``.
      w_shape: ``(Cin, Cout // groups, *K)`` (PyTorch's layout).
      stride, padding, output_padding, dilation: one int per spatial dimension.
      groups: ``G``.
      bias: whether the layer has a ``(Cout,)`` bias.
    """

    name: str
    description: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    bias: bool = True

    @property
    def ndim(self) -> int:
        return len(self.w_shape) - 2

    @property
    def in_channels(self) -> int:
        return self.w_shape[0]

    @property
    def out_channels(self) -> int:
        return self.w_shape[1] * self.groups

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.w_shape[2:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(N, Cout, *O)`` with ``O = (i − 1)·s − 2p + d·(k − 1) + op + 1``."""
        spatial = tuple(
            (i - 1) * s - 2 * p + d * (k - 1) + op + 1
            for i, k, s, p, op, d in zip(
                self.x_shape[2:], self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation
            )
        )
        return (self.x_shape[0], self.out_channels) + spatial

    @property
    def reduction_lengths(self) -> dict[str, int]:
        """Terms summed per element: ``y`` (``Cin/G · Πk``, +1 with a bias),
        ``dx`` (``Cout/G · Πk``), ``dweight`` (``N · Π input``) and ``dbias``
        (``N · Π output``), as in ``jtconv.testing``'s tolerances."""
        taps = math.prod(self.kernel_size)
        return {
            "y": self.in_channels // self.groups * taps + int(self.bias),
            "dx": self.w_shape[1] * taps,
            "dweight": self.x_shape[0] * math.prod(self.x_shape[2:]),
            "dbias": math.prod(self.output_shape[:1] + self.output_shape[2:]),
        }

    @property
    def torch_kwargs(self) -> dict:
        """Keyword arguments of ``torch.nn.functional.conv_transpose{n}d`` (and jtconv's)."""
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            dilation=self.dilation,
        )

    def summary(self) -> str:
        """One line such as ``x(16,128,16,16)→64 k4 s2 p1``."""
        parts = [f"x({','.join(map(str, self.x_shape))})→{self.out_channels}", "k" + _compact(self.kernel_size)]
        for label, values, default in (
            ("s", self.stride, 1),
            ("p", self.padding, 0),
            ("op", self.output_padding, 0),
            ("d", self.dilation, 1),
        ):
            if any(v != default for v in values):
                parts.append(label + _compact(values))
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if not self.bias:
            parts.append("no bias")
        return " ".join(parts)


def _compact(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _shape(
    name: str,
    description: str,
    x_shape: tuple[int, ...],
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
) -> BenchShape:
    ndim = len(x_shape) - 2
    return BenchShape(
        name=name,
        description=description,
        x_shape=x_shape,
        w_shape=(x_shape[1], out_channels // groups) + (kernel,) * ndim,
        stride=(stride,) * ndim,
        padding=(padding,) * ndim,
        output_padding=(output_padding,) * ndim,
        dilation=(dilation,) * ndim,
        groups=groups,
        bias=bias,
    )


SHAPES: tuple[BenchShape, ...] = (
    _shape("dcgan", "2d DCGAN generator block", (16, 128, 16, 16), 64, 4, stride=2, padding=1),
    _shape("unet2d", "2d U-Net up-sampling", (8, 128, 32, 32), 64, 2, stride=2),
    _shape("vae", "2d VAE decoder", (2, 64, 64, 64), 64, 3, stride=2, padding=1, output_padding=1),
    _shape("stride1", "2d stride-1 (decoder refinement)", (4, 64, 32, 32), 64, 3, padding=1),
    _shape("vocoder1d", "1d vocoder up-sampling", (2, 256, 256), 128, 16, stride=8, padding=4),
    _shape("conv3d", "3d generator block", (1, 32, 8, 16, 16), 16, 4, stride=2, padding=1),
    _shape("unet3d", "3d U-Net up-sampling", (1, 64, 8, 16, 16), 32, 2, stride=2),
    _shape("depthwise", "2d depthwise", (4, 64, 32, 32), 64, 4, stride=2, padding=1, groups=64, bias=False),
    _shape(
        "dilated", "2d dilated", (8, 64, 16, 16), 64, 3, stride=2, padding=2, output_padding=1, dilation=2, bias=False
    ),
)

HOLDOUT_SHAPES: tuple[BenchShape, ...] = (
    _shape("biggan", "2d generator block, many channels", (8, 256, 8, 8), 128, 4, stride=2, padding=1),
    _shape("pix2pix", "2d decoder block, batch 1", (1, 512, 16, 16), 256, 4, stride=2, padding=1),
    _shape("same5", "2d k5 'same'-style up-sampling", (4, 64, 32, 32), 32, 5, stride=2, padding=2, output_padding=1),
    _shape("vae128", "2d VAE decoder, 128 channels", (4, 128, 32, 32), 64, 3, stride=2, padding=1, output_padding=1),
    _shape("stride4", "2d k8 s4 up-sampling", (4, 64, 16, 16), 32, 8, stride=4, padding=2),
    _shape("stride1k5", "2d stride-1 k5", (2, 32, 64, 64), 32, 5, padding=2),
    _shape("pointwise", "2d 1×1", (8, 256, 32, 32), 128, 1),
    _shape("audio1d", "1d k4 s2 up-sampling", (8, 128, 1024), 64, 4, stride=2, padding=1),
    _shape("hifigan", "1d k8 s4 vocoder up-sampling", (4, 256, 512), 128, 8, stride=4, padding=2),
    _shape("conv3dk3", "3d k3 s2 op1 up-sampling", (2, 16, 8, 16, 16), 16, 3, stride=2, padding=1, output_padding=1),
    _shape("grouped", "2d grouped, 8 groups", (8, 128, 16, 16), 128, 4, stride=2, padding=1, groups=8),
    _shape("depthwise1d", "1d depthwise", (4, 128, 512), 128, 4, stride=2, padding=1, groups=128, bias=False),
)
"""Layers the lowerings were *not* tuned on: a check that the suite's results
carry over (``--suite holdout``)."""

LARGE_KERNEL_SHAPES: tuple[BenchShape, ...] = (
    _shape("fcn32s", "FCN-32s upscore", (1, 21, 8, 8), 21, 64, stride=32, bias=False),
    _shape("k16s16-3d", "PyTorch test ConvTranspose3d k16 s16 p7", (1, 1, 15, 13, 13), 1, 16, stride=16, padding=7),
    _shape("k16s16-2d", "ConvTranspose2d k16 s16 p7", (1, 1, 15, 13), 1, 16, stride=16, padding=7),
    _shape("fcn8s", "FCN-8s upscore8", (1, 21, 38, 38), 21, 16, stride=8, bias=False),
    _shape(
        "r2036-3d", "3d k3 s2 (random seed 2036, r00)", (2, 64, 8, 8, 8), 64, 3, stride=2, padding=1, output_padding=1
    ),
    _shape("fsrcnn-x2", "FSRCNN ×2 deconvolution k9 s2", (1, 56, 64, 64), 1, 9, stride=2, padding=4, output_padding=1),
    _shape("fsrcnn-x3", "FSRCNN ×3 deconvolution k9 s3", (1, 56, 64, 64), 1, 9, stride=3, padding=4, output_padding=2),
    _shape("fsrcnn-x4", "FSRCNN ×4 deconvolution k9 s4", (1, 56, 64, 64), 1, 9, stride=4, padding=4, output_padding=3),
    _shape("k5s2-3d", "3d decoder k5 s2", (1, 32, 8, 16, 16), 16, 5, stride=2, padding=2, output_padding=1),
)
"""Large kernels, whose per-tap programs would compile slowly: the compile-time issue's
layers (FCN-32s, FCN-8s, PyTorch's k16 s16 tests, a 3d k3 s2 layer), then kernels of other
public models that do not tile their stride (FSRCNN's k9, a 3d k5 decoder layer)
(``--suite large``; ``compile_time.py`` times their compilation)."""

MODEL_SHAPES: tuple[BenchShape, ...] = (
    _shape("dcgan-rgb", "DCGAN generator's last layer, 64 → 3 (RGB)", (64, 64, 32, 32), 3, 4, stride=2, padding=1),
    _shape("dcgan-z", "DCGAN generator's first layer, z (100) → 4×4", (64, 100, 1, 1), 512, 4, bias=False),
    _shape("vqvae-dec", "VQ-VAE decoder k4 s2 128 → 64", (16, 128, 32, 32), 64, 4, stride=2, padding=1),
    _shape("lapsrn-up", "LapSRN feature up-sampling k4 s2 64 → 64", (16, 64, 32, 32), 64, 4, stride=2, padding=1),
    _shape("fcn-upscore2", "FCN-8s upscore2, 21 classes", (8, 21, 32, 32), 21, 4, stride=2, bias=False),
    _shape(
        "dw-up32", "learned depthwise ×2 up-sampling, 32 ch.", (8, 32, 64, 64), 32, 4, stride=2, padding=1, groups=32
    ),
    _shape(
        "dw-up64", "learned depthwise ×2 up-sampling, 64 ch.", (4, 64, 64, 64), 64, 4, stride=2, padding=1, groups=64
    ),
    _shape("hifigan-up1", "HiFi-GAN v1 first up-sampling k16 s8", (16, 512, 32), 256, 16, stride=8, padding=4),
    _shape("hifigan-up3", "HiFi-GAN v1 third up-sampling k4 s2", (16, 128, 2048), 64, 4, stride=2, padding=1),
    _shape("hifigan-up4", "HiFi-GAN v1 last up-sampling k4 s2", (16, 64, 4096), 32, 4, stride=2, padding=1),
    _shape("encodec-up2", "EnCodec decoder k10 s5 256 → 128", (8, 256, 600), 128, 10, stride=5),
    _shape("unet3d-med", "3D U-Net (medical) up-convolution k2 s2 256 → 128", (1, 256, 8, 8, 8), 128, 2, stride=2),
    _shape("vnet-up", "V-Net up-convolution k2 s2 128 → 64", (1, 128, 16, 16, 16), 64, 2, stride=2),
)
"""Layers of public models in the families the planner is judged on (GAN generators, VAE/VQ-VAE
decoders, super-resolution, segmentation heads, depthwise learned up-sampling, vocoders, audio
codecs, 3d medical decoders), with typical training batches; none of them was used to tune the
estimate's thresholds (``--suite models``)."""

SUITES: dict[str, tuple[BenchShape, ...]] = {
    "main": SHAPES,
    "holdout": HOLDOUT_SHAPES,
    "large": LARGE_KERNEL_SHAPES,
    "models": MODEL_SHAPES,
}

SHAPES_BY_NAME: dict[str, BenchShape] = {shape.name: shape for suite in SUITES.values() for shape in suite}


def select_shapes(names: list[str] | None, suite: str = "main") -> list[BenchShape]:
    """The shapes named in ``names`` (all of ``suite`` for ``None``), in suite order.

    Names may come from any suite; ``suite`` only picks the default set.

    Raises:
      ValueError: naming ``--shapes`` when a name is in no suite, or
        ``--suite`` when the suite does not exist.
    """
    if suite not in SUITES:
        raise ValueError(f"--suite: unknown suite {suite!r}; choose from {list(SUITES)}")
    if not names:
        return list(SUITES[suite])
    unknown = [n for n in names if n not in SHAPES_BY_NAME]
    if unknown:
        raise ValueError(f"--shapes: unknown shape(s) {unknown}; choose from {list(SHAPES_BY_NAME)}")
    return [shape for suite in SUITES.values() for shape in suite if shape.name in names]
