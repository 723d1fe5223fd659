"""Checking jtconv (or any JAX code) against PyTorch: sweeps, tolerances, asserts.

This module is the one place where the configurations jtconv is checked on are
defined; the test suite and the ``jtconv check`` command both use it.

* :class:`ConvTransposeConfig` — one transposed convolution (shapes and
  arguments, possibly invalid), and :func:`sweep_configs` /
  :func:`random_config`, a seeded generator covering 1d/2d/3d and every
  argument at once.
* :func:`torch_conv_transpose` / :func:`jtconv_conv_transpose` — run a config
  through torch (``F.conv_transposeNd``, or ``nn.ConvTransposeNd.forward``
  with ``output_size``) and through jtconv.
* :func:`relative_tolerance` — per-dtype tolerances derived from the
  arithmetic (see its docstring).
* :func:`assert_matches_torch` — compare any JAX function with any torch
  function on the same numpy inputs, outputs and (optionally) gradients, a
  float64 :class:`Referee` judging what float32 rounding puts outside the
  tolerance; :func:`constant` marks inputs that are not differentiated.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Comparison",
    "Constant",
    "ConvTransposeConfig",
    "LeafComparison",
    "Referee",
    "assert_config_matches_torch",
    "assert_matches_torch",
    "check_config",
    "compare_with_torch",
    "constant",
    "full_precision",
    "jtconv_conv_transpose",
    "make_inputs",
    "planned",
    "random_config",
    "relative_tolerance",
    "sweep_configs",
    "torch_conv_transpose",
    "torch_rejection",
]

IntOrTuple = int | tuple[int, ...]

# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvTransposeConfig:
    """One transposed convolution, as shapes and arguments (not necessarily valid).

    Attributes:
      input_shape: ``(N, Cin, *spatial)`` or unbatched ``(Cin, *spatial)``.
      weight_shape: ``(Cin, Cout // groups, *kernel_size)``; its rank fixes
        the number of spatial dimensions.
      stride, padding, output_padding, dilation: an int or one per spatial
        dimension, passed as given to both frameworks.
      groups: ``G``.
      bias_shape: shape of the bias, ``None`` for no bias.
      output_size: when set, the output size is requested instead of
        ``output_padding`` (torch: ``nn.ConvTransposeNd.forward(x, output_size)``).
    """

    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: IntOrTuple = 1
    padding: IntOrTuple = 0
    output_padding: IntOrTuple = 0
    dilation: IntOrTuple = 1
    groups: int = 1
    bias_shape: tuple[int, ...] | None = None
    output_size: tuple[int, ...] | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.weight_shape) - 2

    @property
    def batched(self) -> bool:
        return len(self.input_shape) == self.ndim + 2

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight_shape[2:])

    @property
    def out_channels(self) -> int:
        return self.weight_shape[1] * self.groups

    def jtconv_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`jtconv.conv_transpose` (without ``algorithm``)."""
        kwargs: dict[str, Any] = dict(
            stride=self.stride, padding=self.padding, groups=self.groups, dilation=self.dilation
        )
        if self.output_size is None:
            kwargs["output_padding"] = self.output_padding
        else:
            kwargs["output_size"] = self.output_size
        return kwargs

    def reduction_lengths(self) -> dict[str, int]:
        """Terms summed per element of the output and of each gradient.

        Output: ``Cin/G · Πk`` products (+1 for the bias); d input:
        ``Cout/G · Πk``; d weight: ``N · Π input``; d bias: ``N · Π output``
        (upper bounds: strides and crops leave fewer terms for some elements).
        """
        groups = max(self.groups, 1)
        taps = math.prod(self.kernel_size)
        batch = self.input_shape[0] if self.batched else 1
        spatial = math.prod(self.input_shape[-self.ndim :])
        out_spatial = math.prod(_predicted_output_size(self))
        return {
            "output": max(self.weight_shape[0] // groups * taps + (self.bias_shape is not None), 1),
            "x": max(self.weight_shape[1] * taps, 1),
            "weight": max(batch * spatial, 1),
            "bias": max(batch * out_spatial, 1),
        }

    def label(self) -> str:
        """Compact one-line description, e.g. ``2d x(1,4,5,5) w(4,2,3,3) s=2 p=1 g=4 +b``."""
        parts = [
            f"{self.ndim}d",
            "x" + _shape_text(self.input_shape),
            "w" + _shape_text(self.weight_shape),
        ]
        for name, value, default in (
            ("s", self.stride, 1),
            ("p", self.padding, 0),
            ("op", self.output_padding, 0),
            ("d", self.dilation, 1),
            ("g", self.groups, 1),
        ):
            if value != default:
                parts.append(f"{name}={_value_text(value)}")
        if self.bias_shape is not None:
            parts.append("+b" if self.bias_shape == (self.out_channels,) else "b" + _shape_text(self.bias_shape))
        if self.output_size is not None:
            parts.append("size=" + _shape_text(self.output_size))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); inverse of :meth:`from_json`."""
        return {field.name: _to_json_value(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvTransposeConfig:
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = data.get(field.name, field.default)
            values[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ",".join(str(v) for v in shape) + ")"


def _value_text(value: IntOrTuple) -> str:
    return str(value) if isinstance(value, int) else _shape_text(value)


def _to_json_value(value):
    return list(value) if isinstance(value, tuple) else value


def _per_dim(value: IntOrTuple, ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def _predicted_output_size(config: ConvTransposeConfig) -> tuple[int, ...]:
    """PyTorch's output size formula, without validation (may be ≤ 0)."""
    n = config.ndim
    if config.output_size is not None:
        return tuple(config.output_size[-n:])
    s, p, op, d = (_per_dim(v, n) for v in (config.stride, config.padding, config.output_padding, config.dilation))
    return tuple(
        (i - 1) * si - 2 * pi + di * (ki - 1) + opi + 1
        for i, ki, si, pi, opi, di in zip(config.input_shape[-n:], config.kernel_size, s, p, op, d)
    )


# Limits of the random sweep: small shapes keep each configuration cheap to
# compile and run, while every argument still takes values on both sides of
# each of PyTorch's rules.
_MAX_KERNEL = {1: 4, 2: 4, 3: 3}
_MAX_INPUT = {1: 7, 2: 5, 3: 4}
_NDIM_WEIGHTS = {1: 0.35, 2: 0.4, 3: 0.25}

INVALID_KINDS: tuple[str, ...] = (
    "stride",
    "dilation",
    "padding",
    "output_padding_too_large",
    "output_padding_negative",
    "groups",
    "channels",
    "crop_too_much",
    "output_size",
    "bias_shape",
    "kernel_size",
    "input_rank",
    "input_empty",
)


def random_config(
    rng: np.random.Generator,
    *,
    ndims: Sequence[int] = (1, 2, 3),
    invalid_probability: float = 0.1,
    output_size_probability: float = 0.15,
) -> ConvTransposeConfig:
    """Draw one configuration with every argument varied at once.

    Valid draws satisfy PyTorch's rules: ``output_padding`` is drawn from
    ``[0, max(s, d))`` (so ``op ≥ s`` happens whenever ``d > s``), ``padding``
    from ``[0, ((i−1)·s + d·(k−1) + op) // 2]`` (so often ``p > d·(k−1)``), with
    groups, bias, unbatched input, an occasional empty batch or empty output
    (a padding making one output size exactly 0) and, with
    ``output_size_probability``, a requested ``output_size`` (spatial or full
    shape) instead of ``output_padding``. With ``invalid_probability`` one
    rule is then broken (see :data:`INVALID_KINDS`). Whether a configuration is
    valid is decided by torch, not by this generator.
    """
    weights = np.array([_NDIM_WEIGHTS[n] for n in ndims])
    ndim = int(rng.choice(list(ndims), p=weights / weights.sum()))
    groups = int(rng.choice([1, 1, 1, 2, 3, 4]))
    in_per_group = int(rng.integers(1, 4 if ndim < 3 else 3))
    out_per_group = int(rng.integers(1, 4 if ndim < 3 else 3))
    kernel = tuple(int(k) for k in rng.integers(1, _MAX_KERNEL[ndim] + 1, ndim))
    stride = tuple(int(rng.choice([1, 1, 2, 2, 3, 4])) for _ in range(ndim))
    dilation = tuple(int(rng.choice([1, 1, 1, 2, 3])) for _ in range(ndim))
    spatial = tuple(int(i) for i in rng.integers(1, _MAX_INPUT[ndim] + 1, ndim))
    use_output_size = rng.random() < output_size_probability
    output_padding = (
        (0,) * ndim if use_output_size else tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
    )
    padding = tuple(
        _draw_padding(rng, (i - 1) * s + d * (k - 1) + op, d * (k - 1))
        for i, k, s, d, op in zip(spatial, kernel, stride, dilation, output_padding)
    )
    if rng.random() < 0.03:
        padding = _empty_output_padding(spatial, kernel, stride, dilation, output_padding, padding)
    batched = rng.random() < 0.8
    batch = 0 if rng.random() < 0.02 else int(rng.integers(1, 4))
    cin = groups * in_per_group
    input_shape = ((batch,) if batched else ()) + (cin,) + spatial
    weight_shape = (cin, out_per_group) + kernel
    bias_shape = (groups * out_per_group,) if rng.random() < 0.5 else None
    output_size = None
    if use_output_size:
        minimum = [
            (i - 1) * s - 2 * p + d * (k - 1) + 1 for i, k, s, d, p in zip(spatial, kernel, stride, dilation, padding)
        ]
        target = tuple(m + int(rng.integers(0, s)) for m, s in zip(minimum, stride))
        full = rng.random() < 0.3
        output_size = (
            input_shape[: len(input_shape) - ndim - 1] + (groups * out_per_group,) + target if full else target
        )
        if full:
            output_size = tuple(output_size)

    config = ConvTransposeConfig(
        input_shape=input_shape,
        weight_shape=weight_shape,
        stride=_maybe_int(rng, stride),
        padding=_maybe_int(rng, padding),
        output_padding=_maybe_int(rng, output_padding),
        dilation=_maybe_int(rng, dilation),
        groups=groups,
        bias_shape=bias_shape,
        output_size=output_size,
    )
    if rng.random() < invalid_probability:
        config = break_rule(config, rng)
    return config


def _draw_padding(rng: np.random.Generator, room: int, span: int) -> int:
    """Padding keeping ``out = room − 2p + 1 ≥ 1``: half the draws stay within
    the kernel span ``d·(k−1)``, half range over everything allowed."""
    limit = room // 2
    if rng.random() < 0.5:
        limit = min(limit, span)
    return int(rng.integers(0, limit + 1))


def _empty_output_padding(spatial, kernel, stride, dilation, output_padding, padding) -> tuple[int, ...]:
    """``padding`` changed in the first dimension where a padding makes the
    output size exactly 0 (``room + 1`` even), to test empty outputs."""
    padding = list(padding)
    for dim, (i, k, s, d, op) in enumerate(zip(spatial, kernel, stride, dilation, output_padding)):
        room = (i - 1) * s + d * (k - 1) + op
        if (room + 1) % 2 == 0:
            padding[dim] = (room + 1) // 2
            break
    return tuple(padding)


def _maybe_int(rng: np.random.Generator, values: tuple[int, ...]) -> IntOrTuple:
    """Pass equal per-dimension values as a plain int some of the time."""
    if len(set(values)) == 1 and rng.random() < 0.4:
        return values[0]
    return values


def break_rule(config: ConvTransposeConfig, rng: np.random.Generator, kind: str | None = None) -> ConvTransposeConfig:
    """Return ``config`` with one of PyTorch's rules broken (``kind`` from :data:`INVALID_KINDS`)."""
    n = config.ndim
    kind = kind or str(rng.choice(INVALID_KINDS))
    dim = int(rng.integers(0, n))
    stride, padding, output_padding, dilation = (
        list(_per_dim(v, n)) for v in (config.stride, config.padding, config.output_padding, config.dilation)
    )
    replace = dataclasses.replace
    if kind == "stride":
        stride[dim] = int(rng.choice([0, -1]))
        return replace(config, stride=tuple(stride))
    if kind == "dilation":
        dilation[dim] = int(rng.choice([0, -1]))
        return replace(config, dilation=tuple(dilation))
    if kind == "padding":
        padding[dim] = -1
        return replace(config, padding=tuple(padding))
    if kind == "output_padding_too_large":
        output_padding[dim] = max(stride[dim], dilation[dim]) + int(rng.integers(0, 2))
        return replace(config, output_padding=tuple(output_padding), output_size=None)
    if kind == "output_padding_negative":
        output_padding[dim] = -1
        return replace(config, output_padding=tuple(output_padding), output_size=None)
    if kind == "groups":
        cin = config.weight_shape[0]
        candidates = [g for g in range(2, cin + 3) if cin % g] + [0]
        groups = int(rng.choice(candidates))
        return replace(config, groups=groups, bias_shape=None, output_size=None)
    if kind == "channels":
        shape = list(config.input_shape)
        shape[-n - 1] += 1
        return replace(config, input_shape=tuple(shape))
    if kind == "crop_too_much":
        i = config.input_shape[-n + dim]
        k = config.kernel_size[dim]
        room = (i - 1) * stride[dim] + dilation[dim] * (k - 1) + output_padding[dim]
        padding[dim] = (room + 1) // 2 + 1 + int(rng.integers(0, 2))  # out = room − 2p + 1 ≤ −1
        return replace(config, padding=tuple(padding), output_size=None)
    if kind == "output_size":
        sizes = list(_predicted_output_size(replace(config, output_padding=0, output_size=None)))
        sizes[dim] += -1 if rng.random() < 0.5 else stride[dim]
        return replace(config, output_padding=0, output_size=tuple(sizes))
    if kind == "bias_shape":
        return replace(config, bias_shape=(config.out_channels + 1,))
    if kind == "kernel_size":
        shape = list(config.weight_shape)
        shape[2 + dim] = 0
        return replace(config, weight_shape=tuple(shape), output_size=None)
    if kind == "input_rank":
        return replace(config, input_shape=(1,) + config.input_shape, output_size=None)
    if kind == "input_empty":
        shape = list(config.input_shape)
        if config.batched:
            shape[0] = max(shape[0], 1)
        shape[-n + dim] = 0
        return replace(config, input_shape=tuple(shape), output_size=None)
    raise ValueError(f"kind must be one of {INVALID_KINDS}, got {kind!r}")


def sweep_configs(count: int, seed: int = 0, **kwargs) -> list[ConvTransposeConfig]:
    """``count`` configurations from :func:`random_config` with a fixed seed.

    The list depends only on ``(count, seed, kwargs)``, so slices of it are
    stable chunks that parallel test workers can share out.
    """
    rng = np.random.default_rng(seed)
    return [random_config(rng, **kwargs) for _ in range(count)]


def check_configs(quick: bool, seed: int = 0) -> list[ConvTransposeConfig]:
    """The configurations ``jtconv check`` runs: hand-picked ones (the tutorial
    examples and one per tricky argument) followed by a seeded random sweep
    (24 in ``quick`` mode, 240 otherwise; about 10% of them invalid)."""
    return named_configs() + sweep_configs(24 if quick else 240, seed=seed)


def named_configs() -> list[ConvTransposeConfig]:
    """Hand-picked configurations that every check run includes."""
    C = ConvTransposeConfig
    return [
        C((1, 1, 4, 4), (1, 1, 4, 4), stride=2, padding=1),  # the 4×4 tutorial example
        C((1, 4, 5, 5), (4, 2, 3, 3), groups=4, bias_shape=(8,)),  # grouped
        C((2, 3, 6), (3, 2, 3), stride=2, padding=5, output_padding=1),  # padding > d·(k−1)
        C((2, 6, 3, 3), (6, 4, 3, 3), stride=1, dilation=3, output_padding=2, groups=3),  # op ≥ stride
        C(
            (2, 4, 3, 3, 3),
            (4, 2, 2, 3, 2),
            stride=(2, 1, 3),
            padding=(1, 0, 1),
            output_padding=(1, 0, 2),
            bias_shape=(2,),
        ),
        C((3, 4, 4), (3, 2, 3, 3), stride=2, padding=1, bias_shape=(2,), output_size=(8, 8)),  # output_size, unbatched
        # Invalid: torch rejects these, jtconv must raise ValueError.
        C((1, 4, 5, 5), (4, 2, 3, 3), stride=2, output_padding=2),  # op ≥ max(s, d)
        C((1, 4, 5, 5), (4, 2, 3, 3), stride=(1, 0)),
        C((1, 4, 5, 5), (4, 2, 3, 3), dilation=0),
        C((1, 4, 5, 5), (4, 2, 3, 3), padding=-1),
        C((1, 4, 5, 5), (4, 2, 3, 3), padding=4),  # crops more than the whole result
        C((1, 4, 5, 5), (4, 2, 3, 3), groups=3),
        C((1, 3, 5, 5), (4, 2, 3, 3)),  # channel mismatch
        C((1, 4, 5, 5), (4, 2, 3, 3), stride=2, padding=1, output_size=(11, 11)),  # unreachable
    ]


# ---------------------------------------------------------------------------
# Running a configuration
# ---------------------------------------------------------------------------


def make_inputs(config: ConvTransposeConfig, dtype: Any = "float32", seed: int = 0) -> tuple[np.ndarray, ...]:
    """Standard-normal ``(x, weight)`` or ``(x, weight, bias)`` for ``config``.

    Values are rounded to ``dtype`` once, here (bfloat16 via ``ml_dtypes``), so
    both frameworks receive identical numbers.
    """
    dtype = jnp.dtype(dtype)
    rng = np.random.default_rng(seed)
    shapes = [config.input_shape, config.weight_shape]
    if config.bias_shape is not None:
        shapes.append(config.bias_shape)
    return tuple(
        rng.standard_normal(tuple(max(s, 0) for s in shape)).astype(np.float32).astype(dtype) for shape in shapes
    )


def torch_conv_transpose(config: ConvTransposeConfig) -> Callable:
    """A torch function ``f(x, weight[, bias])`` computing ``config``.

    Uses ``torch.nn.functional.conv_transposeNd``, or, when ``config.output_size``
    is set, ``nn.ConvTransposeNd.forward(x, output_size=...)`` with the given
    weight and bias (through ``torch.func.functional_call``).

    Output sizes of exactly 0: torch's default CPU path (oneDNN: float32,
    bfloat16 and float16 whenever the batch is > 1, groups > 1 or the kernel is
    large) returns an empty tensor, while its native fallback kernels (float64,
    and small single-group float32 batches) raise "Output size is too small".
    jtconv follows the oneDNN behaviour everywhere, so when the native kernel
    raises that error for sizes that are all ≥ 0, this function returns the
    empty tensor oneDNN returns (``tests/test_sweep.py`` checks that oneDNN
    really gives that shape).
    """
    import torch

    forward = _torch_forward(config)

    def forward_or_empty(x, weight, bias=None):
        try:
            return forward(x, weight, bias)
        except RuntimeError as error:
            sizes = _predicted_output_size(config)
            if "Output size is too small" not in str(error) or min(sizes) != 0:
                raise
            leading = x.shape[: x.dim() - config.ndim - 1]
            return torch.empty(tuple(leading) + (config.out_channels,) + sizes, dtype=x.dtype, device=x.device)

    return forward_or_empty


def _torch_forward(config: ConvTransposeConfig) -> Callable:
    import torch

    n = config.ndim
    if config.output_size is None:
        functional = getattr(torch.nn.functional, f"conv_transpose{n}d")

        def forward(x, weight, bias=None):
            return functional(
                x,
                weight,
                bias,
                stride=config.stride,
                padding=config.padding,
                output_padding=config.output_padding,
                groups=config.groups,
                dilation=config.dilation,
            )

        return forward

    def forward_with_size(x, weight, bias=None):
        module_class = getattr(torch.nn, f"ConvTranspose{n}d")
        module = module_class(
            in_channels=config.weight_shape[0],
            out_channels=config.out_channels,
            kernel_size=config.kernel_size,
            stride=config.stride,
            padding=config.padding,
            dilation=config.dilation,
            groups=config.groups,
            bias=bias is not None,
            device="meta",
        )
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return torch.func.functional_call(module, params, (x,), {"output_size": list(config.output_size)})

    return forward_with_size


def planned(algorithm: str) -> tuple[str, str]:
    """What a checked name runs: ``(algorithm=, planning mode)``.

    ``"auto"`` is the estimate's plan for the device (``"auto"`` under
    ``planning("estimate")``), ``"measure"`` the plan measured planning picks
    (``"auto"`` under ``planning("measure")``); an algorithm name
    (:data:`jtconv.ALGORITHMS`) or a plan text (``str(plan)``) is itself.
    """
    return ("auto", "measure") if algorithm == "measure" else (algorithm, "estimate")


def jtconv_conv_transpose(config: ConvTransposeConfig, algorithm: str = "auto", precision=None) -> Callable:
    """A JAX function ``f(x, weight[, bias])`` computing ``config`` with
    :func:`jtconv.conv_transpose` and ``algorithm``: ``"auto"``,
    ``"measure"``, an algorithm name or a plan text (see :func:`planned`)."""
    from jtconv.functional import conv_transpose
    from jtconv.plans.resolve import planning

    kwargs = config.jtconv_kwargs()
    name, mode = planned(algorithm)

    def forward(x, weight, bias=None):
        with planning(mode):
            return conv_transpose(x, weight, bias, algorithm=name, precision=precision, **kwargs)

    return forward


def torch_rejection(config: ConvTransposeConfig, inputs: Sequence[np.ndarray] | None = None) -> Exception | None:
    """The exception torch raises for ``config`` on CPU, or ``None`` if it accepts it.

    torch validates some arguments only in its backend kernels, so which
    configurations it rejects depends on the path it picks: its oneDNN path
    (float32 with a batch > 1, for example) accepts ``dilation=0``, which its
    native kernels (always used for float64) reject. A configuration counts as
    rejected when torch rejects it in ``inputs``' dtype or in float64, except
    for exactly-zero output sizes (see :func:`torch_conv_transpose`).

    With an empty batch torch skips argument checks altogether (it accepts
    ``dilation=0`` for a ``(0, C, L)`` input); jtconv validates arguments
    whatever the batch size, so an empty-batch configuration counts as
    rejected when torch rejects it with a batch of 1.
    """
    if config.batched and config.input_shape[0] == 0:
        one = dataclasses.replace(config, input_shape=(1,) + tuple(config.input_shape[1:]))
        error = torch_rejection(one)
        if error is not None:
            return error
    inputs = make_inputs(config) if inputs is None else inputs
    return _torch_error(config, inputs) or _torch_error(config, [np.asarray(a, np.float64) for a in inputs])


def _torch_error(config: ConvTransposeConfig, inputs: Sequence[np.ndarray]) -> Exception | None:
    import torch

    try:
        with torch.no_grad():
            torch_conv_transpose(config)(*(_to_torch(a, "cpu") for a in inputs))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        return error
    return None


def tolerances_for_config(config: ConvTransposeConfig) -> Callable[[str, np.dtype], float]:
    """Tolerance function for :func:`compare_with_torch` using ``config``'s
    reduction lengths (output, and gradients of x, weight, bias)."""
    lengths = config.reduction_lengths()
    names = {"output[0]": "output", "grad[0]": "x", "grad[1]": "weight", "grad[2]": "bias"}

    def tolerance(name: str, dtype: np.dtype) -> float:
        return relative_tolerance(dtype, lengths[names.get(name, "output")])

    return tolerance


@dataclasses.dataclass(frozen=True)
class ConfigResult:
    """Outcome of checking one configuration against torch.

    ``expected``: ``"values"`` (torch computes it) or ``"rejection"`` (torch
    raises). ``comparison`` is set for values; ``torch_error`` /
    ``jtconv_error`` hold the messages of what each side raised.
    """

    config: ConvTransposeConfig
    expected: str
    passed: bool
    comparison: Comparison | None = None
    torch_error: str | None = None
    jtconv_error: str | None = None

    def report(self) -> str:
        head = f"{self.config.label()}: "
        if self.comparison is not None:
            return head + ("matches torch" if self.passed else self.comparison.report())
        if self.expected == "rejection":
            outcome = "both reject" if self.passed else "jtconv did not raise ValueError"
            return head + f"{outcome} (torch: {self.torch_error}; jtconv: {self.jtconv_error})"
        return head + f"torch accepts but jtconv raised {self.jtconv_error}"


def check_config(
    config: ConvTransposeConfig,
    *,
    algorithm: str = "auto",
    dtype: Any = "float32",
    grads: bool = False,
    jax_device=None,
    torch_device: str = "cpu",
    seed: int = 0,
    referee: bool = True,
) -> ConfigResult:
    """Check one configuration with ``algorithm`` (``"auto"``, ``"measure"``, an
    algorithm name or a plan text, see :func:`planned`): torch accepts → same
    shape and values (and gradients with ``grads``) within
    :func:`relative_tolerance`; torch rejects → jtconv raises ``ValueError``.
    For bfloat16/float16 the reference is torch computing in float32 on the
    same rounded inputs (see :func:`_computed_in_float32`)."""
    inputs = make_inputs(config, dtype, seed)
    rejection = torch_rejection(config, inputs)
    jax_fn = jtconv_conv_transpose(config, algorithm, precision=jax.lax.Precision.HIGHEST)
    if rejection is not None:
        try:
            jax.eval_shape(jax_fn, *inputs)
        except ValueError as error:
            raised_here = _raised_by_jtconv(error)
            message = _first_line(error) if raised_here else f"ValueError from outside jtconv: {_first_line(error)}"
            return ConfigResult(
                config, "rejection", raised_here, torch_error=_first_line(rejection), jtconv_error=message
            )
        except Exception as error:  # noqa: BLE001 - any other exception is the failure being reported
            return ConfigResult(
                config,
                "rejection",
                False,
                torch_error=_first_line(rejection),
                jtconv_error=f"{type(error).__name__}: {_first_line(error)}",
            )
        return ConfigResult(config, "rejection", False, torch_error=_first_line(rejection), jtconv_error="no error")
    torch_fn = torch_conv_transpose(config)
    if jnp.dtype(dtype).itemsize == 2:
        torch_fn = _computed_in_float32(torch_fn)
    try:
        comparison = compare_with_torch(
            jax_fn,
            torch_fn,
            *inputs,
            grads=grads,
            tolerance=tolerances_for_config(config),
            jax_device=jax_device,
            torch_device=torch_device,
            referee=referee,
        )
    except ValueError as error:
        return ConfigResult(config, "values", False, jtconv_error=f"ValueError: {_first_line(error)}")
    return ConfigResult(config, "values", comparison.passed, comparison=comparison)


def _computed_in_float32(torch_fn: Callable) -> Callable:
    """``torch_fn`` evaluated in float32 on the (already rounded) half-precision
    inputs, its result rounded back to their dtype (gradients likewise).

    torch's half-precision CPU kernels are not a reliable oracle: in torch
    2.13.0, ``conv_transpose3d``'s bfloat16 input gradient with a batch of 2
    returns NaN or errors larger than the result (batch 1 is fine), against
    torch's own float32/float64 results. Computing in float32 and rounding
    once is what torch's half kernels intend and what both torch and XLA do
    on CPU when they are right. float64 inputs (the float64 referee's run)
    are computed in float64.
    """
    import torch

    def in_float32(*tensors):
        dtype = tensors[0].dtype
        wide = torch.promote_types(dtype, torch.float32)
        return torch_fn(*(t.to(wide) if t is not None else None for t in tensors)).to(dtype)

    return in_float32


def assert_config_matches_torch(config: ConvTransposeConfig, **kwargs) -> None:
    """:func:`check_config`, raising ``AssertionError`` with its report on failure."""
    result = check_config(config, **kwargs)
    if not result.passed:
        raise AssertionError(result.report())


def _raised_by_jtconv(error: BaseException) -> bool:
    """Whether ``error`` was raised by jtconv's own validation (its innermost
    frame is in the jtconv package, not in JAX/XLA or in this module)."""
    import os

    package = os.path.dirname(os.path.abspath(__file__))
    traceback = error.__traceback__
    filename = None
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        traceback = traceback.tb_next
    if filename is None:
        return False
    filename = os.path.abspath(filename)
    return filename.startswith(package + os.sep) and filename != os.path.abspath(__file__)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------

_FIXED_RELATIVE_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def relative_tolerance(dtype: Any, reduction_length: int = 64) -> float:
    """Allowed ``max|jax − torch| / max|torch|`` for a result of ``dtype``.

    Both sides round the inputs identically; they may differ in the order of
    the ``R = reduction_length`` additions behind each element and in where
    they round. Summing ``R`` terms in another order changes a result by about
    ``√R · u · scale`` (``u = eps/2``, rounding errors behaving like a random
    walk), and one final rounding costs ``u · |y|``.

    * float32: ``1e-5`` (about ``84·eps``) — covers the random-walk estimate
      with a margin of 4 up to ``R ≈ 1,500``, far beyond the sweep's
      ``R ≤ 200``. Measured: ≤ 5e-7 on CPU. Longer reductions (a weight
      gradient sums ``N · Π input`` terms: 61,440 for a batch of 15 at
      64×64) get the same estimate and margin, ``4 · u · √R``: there torch's
      own float32 result is 0.9–1.6e-5 away from float64 (measured, R =
      61,440 and 262,144).
    * float64: ``1e-12`` (about ``4,500·eps``), same reasoning.
    * bfloat16 (``eps = 2⁻⁷``) and float16 (``eps = 2⁻¹⁰``):
      ``eps · (2 + √R)`` — one output rounding on each side (``2u = eps``),
      plus a random walk of ``√R`` roundings in case one side accumulates
      in the low precision (GPU kernels may); ``+eps`` of margin. On CPU
      both torch and XLA accumulate in float32 and round once; measured
      errors stay within one ulp.

    Tolerances never depend on the platform: TF32 is switched off on both
    sides for comparisons (see :func:`full_precision`), so GPU results obey
    the same float32 bound.
    """
    name = jnp.dtype(dtype).name
    if name in _FIXED_RELATIVE_TOLERANCE:
        unit_roundoff = float(jnp.finfo(name).eps) / 2
        random_walk = 4.0 * unit_roundoff * math.sqrt(max(reduction_length, 1))
        return max(_FIXED_RELATIVE_TOLERANCE[name], random_walk)
    if name in ("bfloat16", "float16"):
        return float(jnp.finfo(name).eps) * (2.0 + math.sqrt(max(reduction_length, 1)))
    raise ValueError(f"dtype must be a floating dtype (float64, float32, bfloat16, float16), got {name}")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Disable reduced-precision matmul/convolution on both sides (TF32 on
    Ampere-or-newer NVIDIA GPUs): ``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` are set to ``False`` and JAX's default
    precision to ``"highest"``, restored on exit. No effect on CPU results."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------
# Comparing a JAX function with a torch function
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Constant:
    """Marks an input (any pytree) as a constant for :func:`assert_matches_torch`:
    it reaches both functions unchanged but is not differentiated on either side
    (torch gets tensors without ``requires_grad``; JAX takes no VJP for it).
    Made with :func:`constant`."""

    value: Any


def constant(value: Any) -> Constant:
    """Mark ``value`` (an array or a pytree of them, at any depth of the inputs) as
    not differentiated, e.g. BatchNorm running statistics::

        assert_matches_torch(f, g, {"params": p, "batch_stats": constant(s)}, x, grads=True)
    """
    return Constant(value)


REFEREE_FACTOR = 2.0
"""How much farther from float64 than torch's float32 result jtconv's may be (see :class:`Referee`)."""


@dataclasses.dataclass(frozen=True)
class Referee:
    """The float64 referee's judgement of an array outside its float32 (or lower-precision) tolerance.

    Both functions ran again on the inputs cast to float64 (JAX under
    ``jax.enable_x64``), with the same cotangents. ``jtconv_error`` and
    ``torch_error`` are ``max|·|`` distances of the JAX side's and torch's
    results from torch's float64 result; ``float64_error`` that of the JAX
    side's float64 result, allowed ``float64_tolerance`` (a float64
    comparison's); ``tolerance`` the failed comparison's allowance.

    ``verdict`` names the side that is off: ``"torch"`` (the array passes)
    when the float64 results agree and ``jtconv_error ≤ REFEREE_FACTOR ·
    torch_error + tolerance``; ``"jtconv"`` when they agree but the JAX side
    is farther; ``"float64"`` when they disagree: the functions really differ.

    ``REFEREE_FACTOR = 2``: two correct computations in one precision are off
    the exact result by rounding of the same size; which one is farther is
    chance, and over an array the two maxima stay within a factor of 2
    (measured, jtconv/torch in float32 on 126 outputs and gradients of the
    sweep: median 1, 90th percentile 1.5, above 2 only for arrays of at most
    36 elements). A side that rounds in a lower precision (a bfloat16 step,
    TF32: 2⁸ to 2¹⁶ times coarser than float32) is far outside it.
    ``+ tolerance`` passes a JAX side as close to float64 as the comparison
    asked, whatever torch's error: for a few elements no factor bounds the
    ratio of two roundings.
    """

    jtconv_error: float
    torch_error: float
    float64_error: float
    float64_tolerance: float
    tolerance: float

    @property
    def allowed(self) -> float:
        """Largest ``jtconv_error`` that passes: ``REFEREE_FACTOR · torch_error + tolerance``."""
        return REFEREE_FACTOR * self.torch_error + self.tolerance

    @property
    def verdict(self) -> str:
        if not self.float64_error <= self.float64_tolerance:
            return "float64"
        return "torch" if self.jtconv_error <= self.allowed else "jtconv"

    @property
    def passed(self) -> bool:
        return self.verdict == "torch"

    @property
    def conclusion(self) -> str:
        if self.verdict == "float64":
            return "the float64 runs differ too: a real difference, not rounding"
        side = "torch's float32 rounding is off" if self.passed else "jtconv is off"
        relation = "within" if self.passed else "beyond"
        return f"{side} (jtconv {relation} {REFEREE_FACTOR:g} × torch's error + tolerance = {self.allowed:.3g})"

    def report(self) -> str:
        return (
            f"float64 referee: jtconv {self.jtconv_error:.3g} and torch {self.torch_error:.3g} from the float64 "
            f"result, float64 runs {self.float64_error:.3g} apart (allowed {self.float64_tolerance:.3g}): "
            f"{self.conclusion}"
        )


@dataclasses.dataclass(frozen=True)
class LeafComparison:
    """Comparison of one output (or gradient) array.

    Passes when shapes are equal and ``|jax − torch| ≤ atol + rtol · reference``
    everywhere, with ``reference = max(scale, sibling_scale)``: ``scale =
    max|torch|`` of this array, and for a gradient ``sibling_scale``, the
    largest ``max|torch|`` of the gradients of the inputs that share its parent
    in the input pytree (a layer's kernel and bias; the ``"up.weight"`` and
    ``"up.bias"`` keys of a flat torch state dict), 0 otherwise.

    ``name`` is ``"output[i]"`` (i-th output leaf) or ``"grad[j]"`` (j-th
    differentiated input leaf); ``path`` says where that leaf is, e.g.
    ``"output[0]['hidden']"`` or ``"input[0]['params']['up0']['kernel']"``.
    An array outside the tolerance still passes when its :class:`Referee` says
    torch is off.
    """

    name: str
    jax_shape: tuple[int, ...]
    torch_shape: tuple[int, ...]
    jax_dtype: str
    torch_dtype: str
    max_abs_err: float
    where: tuple[int, ...] | None
    jax_value: float | None
    torch_value: float | None
    scale: float
    atol: float
    rtol: float
    mismatched: int
    size: int
    path: str = ""
    sibling_scale: float = 0.0
    referee: Referee | None = None

    @property
    def shape_matches(self) -> bool:
        return self.jax_shape == self.torch_shape

    @property
    def reference_scale(self) -> float:
        """``max(scale, sibling_scale)``: what ``rtol`` is relative to."""
        return max(self.scale, self.sibling_scale)

    @property
    def tolerance(self) -> float:
        """Largest error allowed: ``atol + rtol · reference_scale``."""
        return self.atol + self.rtol * self.reference_scale

    @property
    def relative_error(self) -> float:
        """``max|jax − torch| / reference_scale`` (0 when both are all zeros)."""
        if self.max_abs_err == 0:
            return 0.0
        return self.max_abs_err / self.reference_scale if self.reference_scale > 0 else math.inf

    @property
    def passed(self) -> bool:
        return self.shape_matches and (self.mismatched == 0 or (self.referee is not None and self.referee.passed))

    @property
    def label(self) -> str:
        """``name`` and, when it says more, ``path``: ``"grad[3] (input[0]['b1'])"``."""
        return self.name if self.path in ("", self.name) else f"{self.name} ({self.path})"

    def report(self) -> str:
        head = f"{self.label}: jax {self.jax_shape} {self.jax_dtype} vs torch {self.torch_shape} {self.torch_dtype}"
        if not self.shape_matches:
            return f"{head}\n    shape mismatch"
        lines = [head]
        if self.where is not None:
            lines.append(
                f"    max abs error {self.max_abs_err:.3g} at index {self.where}: "
                f"jax {self.jax_value!r} vs torch {self.torch_value!r}"
            )
        else:
            lines.append("    (empty arrays)")
        siblings = f", siblings' max|torch| = {self.sibling_scale:.3g}" if self.sibling_scale > self.scale else ""
        lines.append(
            f"    scale max|torch| = {self.scale:.3g}{siblings}, relative error {self.relative_error:.3g}; "
            f"allowed {self.tolerance:.3g} (atol {self.atol:.3g} + rtol {self.rtol:.3g} · {self.reference_scale:.3g}); "
            f"{self.mismatched} of {self.size} elements outside"
        )
        if self.referee is not None:
            lines.append("    " + self.referee.report())
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """All leaf comparisons of one :func:`compare_with_torch` call;
    ``referee_error``: why the float64 referee could not run."""

    leaves: tuple[LeafComparison, ...]
    structure_error: str | None = None
    referee_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.structure_error is None and all(leaf.passed for leaf in self.leaves)

    @property
    def max_abs_err(self) -> float:
        """Largest absolute error over the outputs (not the gradients)."""
        errors = [leaf.max_abs_err for leaf in self.leaves if leaf.name.startswith("output") and leaf.shape_matches]
        return max(errors, default=0.0)

    @property
    def max_relative_err(self) -> float:
        """Largest ``error / reference_scale`` over outputs and gradients."""
        return max((leaf.relative_error for leaf in self.leaves if leaf.shape_matches), default=0.0)

    @property
    def refereed(self) -> list[LeafComparison]:
        """The arrays outside their tolerance that pass because the float64 referee says torch is off."""
        return [leaf for leaf in self.leaves if leaf.referee is not None and leaf.passed]

    def leaf(self, name: str) -> LeafComparison:
        """The comparison named ``name`` (``"grad[1]"``) or at ``path`` (``"input[0]['w']"``)."""
        return next(leaf for leaf in self.leaves if name in (leaf.name, leaf.path))

    def report(self) -> str:
        failed = [leaf for leaf in self.leaves if not leaf.passed]
        if self.passed:
            lines = ["JAX and torch results match"]
            if self.refereed:
                lines[0] += (
                    f" ({len(self.refereed)} of {len(self.leaves)} compared arrays by the float64 referee: "
                    "torch's float32 rounding is off)"
                )
        elif failed:
            first = failed[0]
            detail = (
                "shape mismatch"
                if not first.shape_matches
                else (f"max abs error {first.max_abs_err:.3g} at {first.where} > allowed {first.tolerance:.3g}")
            )
            referee = f"; float64 referee: {first.referee.conclusion}" if first.referee else ""
            lines = [
                f"JAX and torch results differ: {len(failed)} of {len(self.leaves)} compared arrays outside "
                f"tolerance, first {first.label}: {detail}{referee}"
            ]
        else:
            lines = ["JAX and torch results differ"]
        if self.structure_error:
            lines.append("  " + self.structure_error)
        if self.referee_error:
            lines.append("  float64 referee could not run: " + self.referee_error)
        for leaf in self.leaves:
            marker = "ok  " if leaf.passed else "FAIL"
            lines.append(f"  [{marker}] " + leaf.report().replace("\n", "\n  "))
        return "\n".join(lines)


def assert_matches_torch(
    jax_fn: Callable,
    torch_fn: Callable,
    *inputs: Any,
    rtol: float | None = None,
    atol: float | None = None,
    grads: bool = False,
    jax_device=None,
    torch_device: str = "cpu",
    jit: bool = True,
    sibling_scale: bool = True,
    float64: bool = False,
    referee: bool = True,
) -> Comparison:
    """Assert that ``jax_fn`` and ``torch_fn`` compute the same thing.

    Each input (a numpy array, or a pytree of them; other leaves pass through
    unchanged) is converted to a ``jax.Array`` for ``jax_fn`` and to a
    ``torch.Tensor`` for ``torch_fn``. The outputs (any pytree of arrays, e.g.
    a whole model's) are compared leaf by leaf: every leaf must have the same
    shape and satisfy ``|jax − torch| ≤ atol + rtol · max|torch|``.

    With ``grads=True`` the gradients of ``Σ output · cotangent`` (a fixed,
    seeded standard-normal cotangent per floating output) with respect to
    every floating input not marked :func:`constant` are compared (JAX:
    ``jax.vjp``; torch: ``torch.autograd.grad``; an input torch does not use
    has gradient 0). A gradient's ``rtol`` is relative to the larger of its
    own ``max|torch|`` and that of its siblings (the gradients of the inputs
    that share its parent in the input pytree, e.g. a layer's kernel and
    bias; in a flat torch state dict, the keys of one layer, ``"up.weight"``
    and ``"up.bias"``; ``sibling_scale=False``: its own only). A parameter whose gradient
    is analytically zero (a bias before an affine-free normalisation) then
    compares its float rounding noise against the layer's gradient scale
    rather than against itself. Top-level inputs have no siblings.

    Inputs at a ReLU kink (a pre-activation within rounding of 0) can flip
    the derivative between two float32 computations that are both right; the
    gradient then differs by the whole incoming gradient at that element.
    ``float64=True`` runs both sides in float64 (floating inputs cast, JAX
    with x64 enabled), where such a flip needs a pre-activation within
    about 1e-16 of 0: compare gradients of ReLU models that way.

    The float64 referee (``referee=True``): an array outside its float32 (or
    half-precision) tolerance may be torch's rounding, not a difference (a
    deep model's gradients collect enough of it). Both functions then run
    again in float64 (a ``torch.nn.Module`` as ``torch_fn`` as a float64
    copy; a torch function closing over float32 tensors cannot, and the
    report says so), and a :class:`Referee` judges each failing array and
    names the side that is off. ``referee=False``: float32 verdicts only.

    Defaults: ``rtol = relative_tolerance(dtype)`` of each leaf's dtype (the
    lower precision of the two sides), ``atol = 0``. Comparisons run under
    :func:`full_precision` (no TF32). ``jax_fn`` (and its VJP) runs under
    ``jax.jit``; pass ``jit=False`` for a function that cannot be traced.
    ``jax_device`` / ``torch_device`` choose where each side runs.

    Returns:
      The :class:`Comparison` (useful for its error figures).

    Raises:
      AssertionError: whose first line names the first differing output or
        gradient (and its place in the pytrees), the largest error, its index
        and the tolerance, followed by the report of every compared array:
        both values at the worst index, shapes, dtypes, scales, the tolerance
        and how many elements are outside it; also for a shape or structure
        mismatch.
    """

    def tolerance(name: str, dtype: np.dtype) -> float:
        return relative_tolerance(dtype) if rtol is None else rtol

    comparison = compare_with_torch(
        jax_fn,
        torch_fn,
        *inputs,
        grads=grads,
        tolerance=tolerance,
        atol=0.0 if atol is None else atol,
        jax_device=jax_device,
        torch_device=torch_device,
        jit=jit,
        sibling_scale=sibling_scale,
        float64=float64,
        referee=referee,
    )
    if not comparison.passed:
        raise AssertionError(comparison.report())
    return comparison


def _input_leaves(inputs: Sequence[Any]) -> tuple[list[Any], list[tuple], list[bool], Any]:
    """``(leaves, key paths, constant marks, treedef)`` of the inputs, with every
    :class:`Constant` replaced by its value and its leaves marked."""

    def is_constant(value) -> bool:
        return isinstance(value, Constant)

    outer, outer_def = jax.tree_util.tree_flatten(list(inputs), is_leaf=is_constant)
    stripped = [leaf.value if is_constant(leaf) else leaf for leaf in outer]
    marks = []
    for leaf, value in zip(outer, stripped):
        mark = is_constant(leaf)
        marks.append(jax.tree_util.tree_map(lambda _, mark=mark: mark, value))
    tree = jax.tree_util.tree_unflatten(outer_def, stripped)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    marks_tree = jax.tree_util.tree_unflatten(outer_def, marks)
    constant_marks = treedef.flatten_up_to(marks_tree)  # type: ignore[attr-defined]  # in jaxlib, absent from its stubs
    return (
        [leaf for _, leaf in with_paths],
        [path for path, _ in with_paths],
        [bool(c) for c in constant_marks],
        treedef,
    )


def _input_path_text(path: tuple) -> str:
    return "input" + jax.tree_util.keystr(path)


def compare_with_torch(
    jax_fn: Callable,
    torch_fn: Callable,
    *inputs: Any,
    grads: bool = False,
    tolerance: Callable[[str, np.dtype], float] | None = None,
    atol: float = 0.0,
    jax_device=None,
    torch_device: str = "cpu",
    jit: bool = True,
    seed: int = 0,
    sibling_scale: bool = True,
    float64: bool = False,
    referee: bool = True,
) -> Comparison:
    """Run both functions on ``inputs`` and compare; returns a :class:`Comparison`.

    ``tolerance(name, dtype)`` gives the relative tolerance of each leaf
    (``"output[i]"``, ``"grad[j]"`` for the j-th differentiated input leaf);
    default :func:`relative_tolerance`. ``jax_fn`` (with its VJP when
    ``grads``) runs as one ``jax.jit`` program unless ``jit=False``. See
    :func:`assert_matches_torch` (constants, ``sibling_scale``, ``float64``,
    ``referee``).
    """
    tolerance = tolerance or (lambda name, dtype: relative_tolerance(dtype))
    leaves, paths, constant_marks, treedef = _input_leaves(inputs)
    arrays = [i for i, leaf in enumerate(leaves) if _is_floating_array(leaf)]
    differentiated = [i for i in arrays if not constant_marks[i]] if grads else []

    run = functools.partial(
        _run_both, jax_fn, torch_fn, leaves, differentiated, treedef, seed, jax_device, torch_device, jit
    )
    results = run(float64)
    if results.structure_error:
        return Comparison((), results.structure_error)
    grad_paths = [paths[i] for i in differentiated]
    torch_grads = [b for _, b in results.pairs[len(results.output_paths) :]]
    siblings = _sibling_scales(grad_paths, torch_grads) if sibling_scale else [0.0] * len(torch_grads)
    places = [(f"output[{i}]", path, 0.0) for i, path in enumerate(results.output_paths)] + [
        (f"grad[{j}]", _input_path_text(path), scale) for j, (path, scale) in enumerate(zip(grad_paths, siblings))
    ]
    compared = [
        _compare_leaf(name, a, b, tolerance, atol, path=path, sibling_scale=scale)
        for (name, path, scale), (a, b) in zip(places, results.pairs)
    ]
    if not referee or float64 or not any(_refereeable(leaf) for leaf in compared):
        return Comparison(tuple(compared))
    try:
        exact = run(True, results.cotangents)
        compared = [
            _referee_leaf(leaf, pair, exact_pair, tolerance, atol) if _refereeable(leaf) else leaf
            for leaf, pair, exact_pair in zip(compared, results.pairs, exact.pairs, strict=True)
        ]
    except Exception as error:  # noqa: BLE001 - the float32 failure stands; the report says why it was not refereed
        return Comparison(tuple(compared), referee_error=f"{type(error).__name__}: {_first_line(error)}")
    return Comparison(tuple(compared))


class _Run(NamedTuple):
    """Both sides' results: ``pairs`` of (jax, torch) arrays, outputs first, then
    gradients (none when an output's shape differs); the cotangents used."""

    pairs: list[tuple[Any, Any]]
    output_paths: list[str]
    cotangents: list[np.ndarray]
    structure_error: str | None = None


def _run_both(
    jax_fn, torch_fn, leaves, differentiated, treedef, seed, jax_device, torch_device, jit, float64, cotangents=None
) -> _Run:
    """Run ``jax_fn`` (with its VJP) and ``torch_fn`` (with autograd) on the input
    leaves; ``float64``: floating inputs cast to float64, JAX under x64 and a
    torch module as a float64 copy. ``cotangents`` (cast to the outputs'
    dtypes) default to :func:`_cotangents` of ``seed``."""
    import torch

    if float64:
        leaves = [np.asarray(leaf, np.float64) if _is_floating_array(leaf) else leaf for leaf in leaves]
        if isinstance(torch_fn, torch.nn.Module):
            torch_fn = copy.deepcopy(torch_fn).double()
    fixed = [i for i, leaf in enumerate(leaves) if _is_floating_array(leaf) and i not in differentiated]
    with jax.enable_x64(True) if float64 else contextlib.nullcontext():
        jax_leaves = [_to_jax(leaf, jax_device) for leaf in leaves]
        torch_leaves = [_to_torch(leaf, torch_device) for leaf in leaves]
        torch_differentiated = [torch_leaves[i] for i in differentiated]
        for tensor in torch_differentiated:
            tensor.requires_grad_(True)

        def jax_call(float_leaves, fixed_leaves):
            current = list(jax_leaves)
            for i, leaf in zip(differentiated, float_leaves):
                current[i] = leaf
            for i, leaf in zip(fixed, fixed_leaves):
                current[i] = leaf
            return jax_fn(*jax.tree_util.tree_unflatten(treedef, current))

        float_args = [jax_leaves[i] for i in differentiated]
        fixed_args = [jax_leaves[i] for i in fixed]
        jax_grads: list = []
        with full_precision(), _jax_device_scope(jax_device):
            if differentiated:
                shapes = jax.tree_util.tree_leaves(jax.eval_shape(jax_call, float_args, fixed_args))
                if cotangents is None:
                    cotangents = _cotangents(shapes, seed)
                cotangents = [c.astype(s.dtype) for c, s in zip(cotangents, filter(_is_inexact, shapes))]

                def forward_and_vjp(float_leaves, fixed_leaves, cotangent_leaves):
                    def float_outputs(float_leaves):
                        out = jax_call(float_leaves, fixed_leaves)
                        return [leaf for leaf in jax.tree_util.tree_leaves(out) if _is_inexact(leaf)], out

                    _, vjp, out = jax.vjp(float_outputs, float_leaves, has_aux=True)
                    return out, vjp(cotangent_leaves)[0]

                run = jax.jit(forward_and_vjp) if jit else forward_and_vjp
                jax_out, jax_grads = run(float_args, fixed_args, [jax.device_put(c, jax_device) for c in cotangents])
            else:
                jax_out = (jax.jit(jax_call) if jit else jax_call)(float_args, fixed_args)
            with torch.set_grad_enabled(bool(differentiated)):
                torch_out = torch_fn(*jax.tree_util.tree_unflatten(treedef, torch_leaves))

    jax_with_paths, jax_tree = jax.tree_util.tree_flatten_with_path(jax_out)
    jax_out_leaves = [leaf for _, leaf in jax_with_paths]
    torch_out_leaves, torch_tree = jax.tree_util.tree_flatten(torch_out)
    output_paths = ["output" + (jax.tree_util.keystr(path) or "[0]") for path, _ in jax_with_paths]
    if len(jax_out_leaves) != len(torch_out_leaves):
        return _Run(
            [],
            output_paths,
            [],
            f"output structures differ: jax returns {jax_tree} ({len(jax_out_leaves)} arrays), "
            f"torch returns {torch_tree} ({len(torch_out_leaves)} arrays)",
        )
    pairs = list(zip(jax_out_leaves, torch_out_leaves))
    if differentiated and all(tuple(np.shape(a)) == tuple(np.shape(b)) for a, b in pairs):
        torch_grads = _torch_gradients(jax_out_leaves, torch_out_leaves, torch_differentiated, cotangents)
        pairs += list(zip(jax_grads, torch_grads))
    return _Run(pairs, output_paths, cotangents or [])


def _sibling_scales(paths: Sequence[tuple], gradients: Sequence[Any]) -> list[float]:
    """For each gradient, the largest ``max|torch|`` among the gradients whose
    inputs share its parent (:func:`_parent`; 0 for a top-level input)."""
    parents = [_parent(path) for path in paths]
    scales = [_max_abs(g) for g in gradients]
    by_parent: dict[tuple, float] = {}
    for parent, scale in zip(parents, scales):
        if parent is not None:
            by_parent[parent] = max(by_parent.get(parent, 0.0), scale)
    return [0.0 if parent is None else by_parent[parent] for parent in parents]


def _parent(path: tuple) -> tuple | None:
    """The layer a leaf belongs to: its path without the last key, or, for a
    dotted string key (torch state-dict naming, ``"up2.bias"``), with the
    key's layer part (``"up2"``) in its place. ``None`` for a top-level input."""
    last = path[-1]
    if isinstance(last, jax.tree_util.DictKey) and isinstance(last.key, str) and "." in last.key:
        return (*path[:-1], last.key.rsplit(".", 1)[0])
    return path[:-1] if len(path) > 1 else None


def _max_abs(tensor) -> float:
    values = tensor.detach().cpu().double().numpy() if hasattr(tensor, "detach") else np.asarray(tensor, np.float64)
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def _is_inexact(value) -> bool:
    return jnp.issubdtype(value.dtype, jnp.inexact)


def _cotangents(out_shapes, seed: int) -> list[np.ndarray]:
    """Seeded standard-normal cotangents, one per floating output leaf (in
    leaf order), rounded to the leaf's dtype."""
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal(leaf.shape).astype(np.float32).astype(leaf.dtype)
        for leaf in jax.tree_util.tree_leaves(out_shapes)
        if _is_inexact(leaf)
    ]


def _torch_gradients(jax_out_leaves, torch_out_leaves, torch_inputs, cotangents):
    """torch gradients of ``Σ output · cotangent`` w.r.t. ``torch_inputs``
    (zeros for inputs the outputs do not depend on)."""
    import torch

    floating_outputs = [t for j, t in zip(jax_out_leaves, torch_out_leaves) if _is_inexact(j)]
    pairs = [
        (out, _to_torch(cot, out.device).to(out.dtype))
        for out, cot in zip(floating_outputs, cotangents)
        if isinstance(out, torch.Tensor) and out.requires_grad
    ]
    gradients = [None] * len(torch_inputs)
    if pairs and torch_inputs:
        outs, cots = zip(*pairs)
        gradients = torch.autograd.grad(outs, torch_inputs, cots, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gradients, torch_inputs)]


def _compare_leaf(
    name: str, jax_value, torch_value, tolerance, atol: float, path: str = "", sibling_scale: float = 0.0
) -> LeafComparison:
    actual, jax_dtype = _numpy(jax_value)
    expected, torch_dtype = _numpy(torch_value)
    rtol = tolerance(name, _lower_precision(jax_dtype, torch_dtype))
    common = dict(
        name=name,
        jax_shape=tuple(actual.shape),
        torch_shape=tuple(expected.shape),
        jax_dtype=jax_dtype,
        torch_dtype=torch_dtype,
        rtol=rtol,
        atol=atol,
        size=int(expected.size),
        path=path,
        sibling_scale=sibling_scale,
    )
    if actual.shape != expected.shape:
        return LeafComparison(
            **common,
            max_abs_err=math.inf,
            where=None,
            jax_value=None,
            torch_value=None,
            scale=0.0,
            mismatched=int(expected.size),
        )
    if actual.size == 0:
        return LeafComparison(
            **common, max_abs_err=0.0, where=None, jax_value=None, torch_value=None, scale=0.0, mismatched=0
        )
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    error = _abs_error(a, b)
    scale = float(np.max(np.abs(np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0))))
    where = np.unravel_index(int(np.argmax(error)), error.shape)
    allowed = atol + rtol * max(scale, sibling_scale)
    return LeafComparison(
        **common,
        max_abs_err=float(error[where]),
        where=tuple(int(i) for i in where),
        jax_value=float(a[where]),
        torch_value=float(b[where]),
        scale=scale,
        mismatched=int(np.count_nonzero(error > allowed)),
    )


def _numpy(value) -> tuple[np.ndarray, str]:
    """``value`` (a torch tensor, floating ones as float64, or anything numpy
    reads) as a numpy array, and the name of its own dtype."""
    import torch

    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        on_cpu = value.detach().cpu()
        return (on_cpu.double() if on_cpu.is_floating_point() else on_cpu).numpy(), dtype
    array = np.asarray(value)
    return array, array.dtype.name


def _abs_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a − b|`` in float64, 0 where both are NaN, ``inf`` where one is."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    error = np.abs(a - b)
    return np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(error), np.inf, error))


def _refereeable(leaf: LeafComparison) -> bool:
    """A failed comparison of equal shapes below float64: the referee can judge it."""
    return not leaf.passed and leaf.shape_matches and _lower_precision(leaf.jax_dtype, leaf.torch_dtype) != np.float64


def _referee_leaf(leaf: LeafComparison, pair, exact_pair, tolerance, atol: float) -> LeafComparison:
    """``leaf`` with its :class:`Referee`: both sides' ``pair`` measured against
    torch's float64 result, and the two float64 results against each other."""
    jax64, torch64 = exact_pair
    agreement = _compare_leaf(leaf.name, jax64, torch64, tolerance, atol, sibling_scale=leaf.sibling_scale)
    truth = _numpy(torch64)[0]
    jax_value, torch_value = (_numpy(value)[0] for value in pair)
    return dataclasses.replace(
        leaf,
        referee=Referee(
            jtconv_error=float(np.max(_abs_error(jax_value, truth))),
            torch_error=float(np.max(_abs_error(torch_value, truth))),
            float64_error=agreement.max_abs_err,
            float64_tolerance=agreement.tolerance,
            tolerance=leaf.tolerance,
        ),
    )


_PRECISION_ORDER = ["bfloat16", "float16", "float32", "float64"]


def _lower_precision(a: str, b: str) -> np.dtype:
    known = [name for name in (a, b) if name in _PRECISION_ORDER]
    if not known:
        return jnp.dtype("float32")
    return jnp.dtype(min(known, key=_PRECISION_ORDER.index))


def _is_floating_array(value) -> bool:
    return isinstance(value, np.ndarray | jax.Array) and jnp.issubdtype(value.dtype, jnp.floating)


def _to_jax(value, device):
    if isinstance(value, np.ndarray | jax.Array | np.generic):
        return jax.device_put(value, device)
    return value


def _to_torch(value, device):
    """numpy → torch on ``device``; bfloat16 goes through float32 (exact)."""
    import torch

    if not isinstance(value, np.ndarray | np.generic | jax.Array):
        return value
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        return torch.tensor(array.astype(np.float32), device=device).to(torch.bfloat16)
    return torch.tensor(array, device=device)


@contextlib.contextmanager
def _jax_device_scope(device) -> Iterator[None]:
    if device is None:
        yield
    else:
        with jax.default_device(device):
            yield
