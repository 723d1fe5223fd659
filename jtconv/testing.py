"""Checking jtconv, or any JAX code, against PyTorch: the configurations jtconv is checked on (shared by the test
suite and ``jtconv check``), their tolerances, and :func:`assert_matches_torch` for any pair of functions. torch is
imported only inside the functions that need it."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class ConvTransposeConfig:
    """One transposed convolution as shapes and arguments, not necessarily valid.

    ``input_shape`` is ``(N, Cin, *spatial)`` or unbatched ``(Cin, *spatial)``; ``weight_shape``,
    ``(Cin, Cout // groups, *kernel_size)``, fixes the number of spatial dimensions. ``stride``, ``padding``,
    ``output_padding`` and ``dilation`` (an int or one per spatial dimension) reach both frameworks as given.
    ``bias_shape`` is ``None`` for no bias. ``output_size``, when set, is requested instead of ``output_padding``
    (torch: ``nn.ConvTransposeNd.forward(x, output_size)``).
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
        size = (
            {"output_padding": self.output_padding} if self.output_size is None else {"output_size": self.output_size}
        )
        return dict(stride=self.stride, padding=self.padding, groups=self.groups, dilation=self.dilation, **size)

    def reduction_lengths(self) -> dict[str, int]:
        """Terms summed per element of the output and of each gradient (upper bounds: strides and crops leave
        some elements fewer): output ``Cin/G · Πk`` (+1 for the bias); d input ``Cout/G · Πk``; d weight
        ``N · Π input``; d bias ``N · Π output``."""
        taps = math.prod(self.kernel_size)
        batch = self.input_shape[0] if self.batched else 1
        return {
            "output": max(self.weight_shape[0] // max(self.groups, 1) * taps + (self.bias_shape is not None), 1),
            "x": max(self.weight_shape[1] * taps, 1),
            "weight": max(batch * math.prod(self.input_shape[-self.ndim :]), 1),
            "bias": max(batch * math.prod(_predicted_output_size(self)), 1),
        }

    def label(self) -> str:
        """One line, e.g. ``2d x(1,4,5,5) w(4,2,3,3) s=2 p=1 g=4 +b``."""

        def text(value: IntOrTuple) -> str:
            return str(value) if isinstance(value, int) else "(" + ",".join(map(str, value)) + ")"

        parts = [f"{self.ndim}d", "x" + text(self.input_shape), "w" + text(self.weight_shape)]
        arguments = (("s", self.stride, 1), ("p", self.padding, 0), ("op", self.output_padding, 0))
        for name, value, default in (*arguments, ("d", self.dilation, 1), ("g", self.groups, 1)):
            if value != default:
                parts.append(f"{name}={text(value)}")
        if self.bias_shape is not None:
            parts.append("+b" if self.bias_shape == (self.out_channels,) else "b" + text(self.bias_shape))
        if self.output_size is not None:
            parts.append("size=" + text(self.output_size))
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples as lists); inverse of :meth:`from_json`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvTransposeConfig:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _per_dim(value: IntOrTuple, ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def _predicted_output_size(config: ConvTransposeConfig) -> tuple[int, ...]:
    """PyTorch's output size, ``(i − 1)·s − 2p + d·(k − 1) + op + 1``, unvalidated (may be ≤ 0)."""
    n = config.ndim
    if config.output_size is not None:
        return tuple(config.output_size[-n:])
    s, p, op, d = (_per_dim(v, n) for v in (config.stride, config.padding, config.output_padding, config.dilation))
    return tuple(
        (i - 1) * si - 2 * pi + di * (ki - 1) + opi + 1
        for i, ki, si, pi, opi, di in zip(config.input_shape[-n:], config.kernel_size, s, p, op, d)
    )


# Small shapes keep each configuration cheap to compile and run, while every argument still takes values on both
# sides of each of PyTorch's rules.
_MAX_KERNEL = {1: 4, 2: 4, 3: 3}
_MAX_INPUT = {1: 7, 2: 5, 3: 4}
_NDIM_WEIGHTS = {1: 0.35, 2: 0.4, 3: 0.25}

INVALID_KINDS: tuple[str, ...] = tuple(
    "stride dilation padding output_padding_too_large output_padding_negative groups channels crop_too_much "
    "output_size bias_shape kernel_size input_rank input_empty".split()
)


def random_config(
    rng: np.random.Generator,
    *,
    ndims: Sequence[int] = (1, 2, 3),
    invalid_probability: float = 0.1,
    output_size_probability: float = 0.15,
) -> ConvTransposeConfig:
    """One configuration with every argument varied at once.

    ``output_padding`` is drawn from ``[0, max(s, d))`` (so ``op ≥ s`` whenever ``d > s``) and ``padding`` from
    ``[0, ((i−1)·s + d·(k−1) + op) // 2]`` (often ``p > d·(k−1)``), with groups, bias, unbatched input, an occasional
    empty batch or output size of exactly 0 and, with ``output_size_probability``, a requested ``output_size``
    (spatial or full shape). With ``invalid_probability``, one rule is then broken (:func:`break_rule`). torch, not
    this generator, decides which configurations are valid.
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
    rooms = [
        (i - 1) * s + d * (k - 1) + op for i, k, s, d, op in zip(spatial, kernel, stride, dilation, output_padding)
    ]
    padding = tuple(_draw_padding(rng, room, d * (k - 1)) for room, k, d in zip(rooms, kernel, dilation))
    if rng.random() < 0.03:  # an output size of exactly 0, in the first dimension where a padding makes one
        dim = next((dim for dim, room in enumerate(rooms) if room % 2), None)
        if dim is not None:
            padding = tuple((rooms[dim] + 1) // 2 if j == dim else p for j, p in enumerate(padding))
    batched = rng.random() < 0.8
    batch = 0 if rng.random() < 0.02 else int(rng.integers(1, 4))
    cin = groups * in_per_group
    input_shape = ((batch,) if batched else ()) + (cin,) + spatial
    bias_shape = (groups * out_per_group,) if rng.random() < 0.5 else None
    output_size = None
    if use_output_size:
        minimum = [
            (i - 1) * s - 2 * p + d * (k - 1) + 1 for i, k, s, d, p in zip(spatial, kernel, stride, dilation, padding)
        ]
        output_size = tuple(m + int(rng.integers(0, s)) for m, s in zip(minimum, stride))
        if rng.random() < 0.3:  # the full shape
            output_size = input_shape[: len(input_shape) - ndim - 1] + (groups * out_per_group,) + output_size
    config = ConvTransposeConfig(
        input_shape=input_shape,
        weight_shape=(cin, out_per_group) + kernel,
        stride=_maybe_int(rng, stride),
        padding=_maybe_int(rng, padding),
        output_padding=_maybe_int(rng, output_padding),
        dilation=_maybe_int(rng, dilation),
        groups=groups,
        bias_shape=bias_shape,
        output_size=output_size,
    )
    return break_rule(config, rng) if rng.random() < invalid_probability else config


def _draw_padding(rng: np.random.Generator, room: int, span: int) -> int:
    """A padding keeping ``out = room − 2p + 1 ≥ 1``: half the draws within the kernel span ``d·(k−1)``."""
    return int(rng.integers(0, (min(room // 2, span) if rng.random() < 0.5 else room // 2) + 1))


def _maybe_int(rng: np.random.Generator, values: tuple[int, ...]) -> IntOrTuple:
    """Equal per-dimension values as a plain int some of the time."""
    return values[0] if len(set(values)) == 1 and rng.random() < 0.4 else values


def break_rule(config: ConvTransposeConfig, rng: np.random.Generator, kind: str | None = None) -> ConvTransposeConfig:
    """``config`` with one of PyTorch's rules broken (``kind`` from :data:`INVALID_KINDS`, else drawn)."""
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
    if kind in ("output_padding_too_large", "output_padding_negative"):
        large = kind == "output_padding_too_large"
        output_padding[dim] = max(stride[dim], dilation[dim]) + int(rng.integers(0, 2)) if large else -1
        return replace(config, output_padding=tuple(output_padding), output_size=None)
    if kind == "groups":
        cin = config.weight_shape[0]
        groups = int(rng.choice([g for g in range(2, cin + 3) if cin % g] + [0]))
        return replace(config, groups=groups, bias_shape=None, output_size=None)
    if kind == "channels":
        shape = list(config.input_shape)
        shape[-n - 1] += 1
        return replace(config, input_shape=tuple(shape))
    if kind == "crop_too_much":
        room = (config.input_shape[-n + dim] - 1) * stride[dim] + dilation[dim] * (config.kernel_size[dim] - 1)
        padding[dim] = (room + output_padding[dim] + 1) // 2 + 1 + int(rng.integers(0, 2))  # out ≤ −1
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
    """``count`` configurations of :func:`random_config`; the list depends only on ``(count, seed, kwargs)``, so
    parallel test workers can share out slices of it."""
    rng = np.random.default_rng(seed)
    return [random_config(rng, **kwargs) for _ in range(count)]


def check_configs(quick: bool, seed: int = 0) -> list[ConvTransposeConfig]:
    """What ``jtconv check`` runs: :func:`named_configs`, then a seeded sweep of 24 (``quick``) or 240 (about 10%
    of them invalid)."""
    return named_configs() + sweep_configs(24 if quick else 240, seed=seed)


def named_configs() -> list[ConvTransposeConfig]:
    """Hand-picked configurations that every check includes: the tutorial's, one per tricky argument, invalid ones."""
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


def make_inputs(config: ConvTransposeConfig, dtype: Any = "float32", seed: int = 0) -> tuple[np.ndarray, ...]:
    """Standard-normal ``(x, weight[, bias])`` for ``config``, rounded to ``dtype`` once, here (bfloat16 through
    ``ml_dtypes``), so that both frameworks receive identical numbers."""
    rng = np.random.default_rng(seed)
    shapes = [config.input_shape, config.weight_shape] + ([config.bias_shape] if config.bias_shape is not None else [])
    return tuple(rng.standard_normal([max(s, 0) for s in shape]).astype(np.float32).astype(dtype) for shape in shapes)


def torch_conv_transpose(config: ConvTransposeConfig) -> Callable:
    """A torch function ``f(x, weight[, bias])`` computing ``config``: ``torch.nn.functional.conv_transposeNd``, or,
    with ``output_size``, ``nn.ConvTransposeNd.forward(x, output_size=...)`` on the given weight and bias.

    An output size of exactly 0 gives an empty tensor, as torch's oneDNN CPU path (float32, bfloat16 and float16
    with a batch > 1, groups > 1 or a large kernel) returns and jtconv does everywhere, where torch's native kernels
    (float64, small single-group float32 batches) raise "Output size is too small".
    """
    import torch

    n = config.ndim

    def forward(x, weight, bias=None):
        if config.output_size is None:
            functional = getattr(torch.nn.functional, f"conv_transpose{n}d")
            c = config
            return functional(x, weight, bias, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
        module = getattr(torch.nn, f"ConvTranspose{n}d")(
            config.weight_shape[0],
            config.out_channels,
            config.kernel_size,
            config.stride,
            config.padding,
            groups=config.groups,
            bias=bias is not None,
            dilation=config.dilation,
            device="meta",
        )
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return torch.func.functional_call(module, params, (x,), {"output_size": list(config.output_size)})

    def forward_or_empty(x, weight, bias=None):
        try:
            return forward(x, weight, bias)
        except RuntimeError as error:
            sizes = _predicted_output_size(config)
            if "Output size is too small" not in str(error) or min(sizes) != 0:
                raise
            leading = x.shape[: x.dim() - n - 1]
            return torch.empty((*leading, config.out_channels, *sizes), dtype=x.dtype, device=x.device)

    return forward_or_empty


def planned(algorithm: str) -> tuple[str, str]:
    """What a checked name runs, as ``(algorithm=, planning mode)``: ``"auto"`` is the estimate's plan,
    ``"measure"`` the plan measured planning picks; an algorithm name or a plan text is itself."""
    return ("auto", "measure") if algorithm == "measure" else (algorithm, "estimate")


def jtconv_conv_transpose(config: ConvTransposeConfig, algorithm: str = "auto", precision=None) -> Callable:
    """A JAX function ``f(x, weight[, bias])`` computing ``config`` with :func:`jtconv.conv_transpose` and
    ``algorithm``: ``"auto"``, ``"measure"``, an algorithm name or a plan text (see :func:`planned`)."""
    from jtconv.functional import conv_transpose
    from jtconv.plans.resolve import planning

    kwargs = config.jtconv_kwargs()
    name, mode = planned(algorithm)

    def forward(x, weight, bias=None):
        with planning(mode):
            return conv_transpose(x, weight, bias, algorithm=name, precision=precision, **kwargs)

    return forward


def torch_rejection(config: ConvTransposeConfig, inputs: Sequence[np.ndarray] | None = None) -> Exception | None:
    """The exception torch raises for ``config`` on CPU, or ``None`` when it accepts it.

    torch validates some arguments only in the backend kernel it picks (its oneDNN path accepts ``dilation=0``, its
    native kernels, always used for float64, do not), and skips its checks for an empty batch. A configuration
    counts as rejected when torch rejects it in ``inputs``' dtype or in float64 (except for output sizes of exactly
    0, see :func:`torch_conv_transpose`), and an empty-batch one when torch rejects it with a batch of 1.
    """
    if config.batched and config.input_shape[0] == 0:
        error = torch_rejection(dataclasses.replace(config, input_shape=(1, *config.input_shape[1:])))
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


@dataclasses.dataclass(frozen=True)
class ConfigResult:
    """Outcome of :func:`check_config`: ``expected`` is ``"values"`` (torch computes it; ``comparison`` is set when
    jtconv did too) or ``"rejection"`` (torch raises); ``torch_error`` / ``jtconv_error``: what each side raised."""

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
    """Check one configuration with ``algorithm`` (see :func:`planned`): where torch accepts it, the same shape and
    values (and gradients with ``grads``) within :func:`relative_tolerance` of each result's reduction length; where
    torch rejects it, a ``ValueError`` from jtconv. For bfloat16 and float16 the reference is torch computing in
    float32 on the same rounded inputs (torch 2.13's half-precision CPU kernels are not a reliable oracle:
    ``conv_transpose3d``'s bfloat16 input gradient with a batch of 2 returns NaN)."""
    inputs = make_inputs(config, dtype, seed)
    rejection = torch_rejection(config, inputs)
    jax_fn = jtconv_conv_transpose(config, algorithm, precision=jax.lax.Precision.HIGHEST)
    if rejection is not None:
        try:
            jax.eval_shape(jax_fn, *inputs)
            raised, message = False, "no error"
        except ValueError as error:
            raised = _raised_by_jtconv(error)
            message = _first_line(error) if raised else f"ValueError from outside jtconv: {_first_line(error)}"
        except Exception as error:  # noqa: BLE001 - any other exception is the failure being reported
            raised, message = False, f"{type(error).__name__}: {_first_line(error)}"
        return ConfigResult(config, "rejection", raised, torch_error=_first_line(rejection), jtconv_error=message)
    torch_fn = torch_conv_transpose(config)
    if jnp.dtype(dtype).itemsize == 2:
        torch_fn = _computed_in_float32(torch_fn)
    lengths = config.reduction_lengths()
    names = {"grad[0]": "x", "grad[1]": "weight", "grad[2]": "bias"}

    def tolerance(name: str, dtype: np.dtype) -> float:
        return relative_tolerance(dtype, lengths[names.get(name, "output")])

    try:
        comparison = compare_with_torch(
            jax_fn,
            torch_fn,
            *inputs,
            grads=grads,
            tolerance=tolerance,
            jax_device=jax_device,
            torch_device=torch_device,
            referee=referee,
        )
    except ValueError as error:
        return ConfigResult(config, "values", False, jtconv_error=f"ValueError: {_first_line(error)}")
    return ConfigResult(config, "values", comparison.passed, comparison=comparison)


def _computed_in_float32(torch_fn: Callable) -> Callable:
    """``torch_fn`` computed in float32 (float64 inputs: in float64) on already rounded inputs, its results rounded
    back to their dtype."""
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
    """Whether ``error`` comes from jtconv's own validation: its innermost frame is in the jtconv package, not in
    JAX, XLA or this module."""
    frames = list(traceback.walk_tb(error.__traceback__))
    if not frames:
        return False
    filename = os.path.abspath(frames[-1][0].f_code.co_filename)
    here = os.path.abspath(__file__)
    return filename.startswith(os.path.dirname(here) + os.sep) and filename != here


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_FIXED_RELATIVE_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def relative_tolerance(dtype: Any, reduction_length: int = 64) -> float:
    """Allowed ``max|jax − torch| / max|torch|`` for a result of ``dtype`` summing ``R = reduction_length`` terms.

    Adding ``R`` terms in another order moves a result by about ``√R · u`` of its scale (``u = eps/2``, rounding
    errors walking randomly). float32: ``max(1e-5, 4 · u · √R)`` (``1e-5`` covers ``R ≤ 1,500`` with a margin of 4;
    measured ≤ 5e-7 on CPU; beyond, e.g. a weight gradient summing 61,440 terms, torch's own float32 result is
    0.9–1.6e-5 from float64). float64: ``max(1e-12, 4 · u · √R)``. bfloat16 and float16: ``eps · (2 + √R)``, one
    output rounding on each side (``2u = eps``) plus a random walk of ``√R`` roundings in case one side accumulates
    in the low precision (GPU kernels may), plus ``eps``. The same on every platform: comparisons switch TF32 off
    (:func:`full_precision`).
    """
    name = jnp.dtype(dtype).name
    if name in _FIXED_RELATIVE_TOLERANCE:
        random_walk = 4.0 * float(jnp.finfo(name).eps) / 2 * math.sqrt(max(reduction_length, 1))
        return max(_FIXED_RELATIVE_TOLERANCE[name], random_walk)
    if name in ("bfloat16", "float16"):
        return float(jnp.finfo(name).eps) * (2.0 + math.sqrt(max(reduction_length, 1)))
    raise ValueError(f"dtype must be a floating dtype (float64, float32, bfloat16, float16), got {name}")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No reduced-precision matmuls or convolutions (TF32 on Ampere-or-newer NVIDIA GPUs) on either side:
    torch's ``backends.cuda.matmul.allow_tf32`` and ``backends.cudnn.allow_tf32`` off and JAX's default precision
    ``"highest"``, restored on exit."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclasses.dataclass(frozen=True)
class Constant:
    """An input (any pytree) that reaches both functions of :func:`assert_matches_torch` unchanged but is not
    differentiated on either side. Made with :func:`constant`."""

    value: Any


def constant(value: Any) -> Constant:
    """Mark ``value`` (an array or a pytree of them, at any depth of the inputs) as not differentiated, e.g.
    BatchNorm running statistics::

        assert_matches_torch(f, g, {"params": p, "batch_stats": constant(s)}, x, grads=True)
    """
    return Constant(value)


REFEREE_FACTOR = 2.0
"""How much farther from float64 than torch's float32 result jtconv's may be (see :class:`Referee`)."""


@dataclasses.dataclass(frozen=True)
class Referee:
    """The float64 referee's judgement of an array outside its float32 (or half-precision) tolerance.

    Both functions ran again on the inputs cast to float64 (JAX under ``jax.enable_x64``), with the same
    cotangents. ``jtconv_error`` and ``torch_error``: ``max|·|`` distances of the JAX side's and torch's results from
    torch's float64 result; ``float64_error``: that of the JAX side's float64 result, allowed ``float64_tolerance``;
    ``tolerance``: the failed comparison's allowance.

    ``verdict`` names the side that is off: ``"torch"`` (the array passes) when the float64 results agree and
    ``jtconv_error ≤ REFEREE_FACTOR · torch_error + tolerance``; ``"jtconv"`` when they agree but the JAX side is
    farther; ``"float64"`` when they disagree: the functions really differ. Two correct roundings of an array stay
    within a factor of 2 of each other (measured on 126 float32 outputs and gradients of the sweep: median 1, 90th
    percentile 1.5, above 2 only for arrays of at most 36 elements); a lower-precision step (bfloat16, TF32) is 2⁸ to
    2¹⁶ times farther. ``+ tolerance`` passes a JAX side as close to float64 as the comparison asked.
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
    """The comparison of one output or gradient array.

    It passes when the shapes are equal and ``|jax − torch| ≤ atol + rtol · max(scale, sibling_scale)`` everywhere,
    or when its :class:`Referee` says torch is off. ``scale`` is ``max|torch|`` of this array; ``sibling_scale``,
    for a gradient, the largest ``max|torch|`` of the gradients of inputs sharing its parent in the input pytree (a
    layer's kernel and bias; the ``"up.weight"`` and ``"up.bias"`` keys of a flat torch state dict), else 0.
    ``name`` is ``"output[i]"`` (the i-th output leaf) or ``"grad[j]"`` (the j-th differentiated input leaf);
    ``path`` says where that leaf is, e.g. ``"output[0]['hidden']"`` or ``"input[0]['params']['up0']['kernel']"``.
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
        lines = [head, "    (empty arrays)"]
        if self.where is not None:
            lines[1] = (
                f"    max abs error {self.max_abs_err:.3g} at index {self.where}: "
                f"jax {self.jax_value!r} vs torch {self.torch_value!r}"
            )
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
    """All leaf comparisons of one :func:`compare_with_torch` call; ``structure_error``: why the outputs could not
    be paired; ``referee_error``: why the float64 referee could not run."""

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
            refereed = len(self.refereed)
            lines = ["JAX and torch results match"]
            if refereed:
                lines[0] += (
                    f" ({refereed} of {len(self.leaves)} compared arrays by the float64 referee: "
                    "torch's float32 rounding is off)"
                )
        elif failed:
            first = failed[0]
            detail = "shape mismatch"
            if first.shape_matches:
                detail = f"max abs error {first.max_abs_err:.3g} at {first.where} > allowed {first.tolerance:.3g}"
            referee = f"; float64 referee: {first.referee.conclusion}" if first.referee else ""
            lines = [
                f"JAX and torch results differ: {len(failed)} of {len(self.leaves)} compared arrays outside "
                f"tolerance, first {first.label}: {detail}{referee}"
            ]
        else:
            lines = ["JAX and torch results differ", "  " + str(self.structure_error)]
        if self.referee_error:
            lines.append("  float64 referee could not run: " + self.referee_error)
        lines += [
            f"  [{'ok  ' if leaf.passed else 'FAIL'}] " + leaf.report().replace("\n", "\n  ") for leaf in self.leaves
        ]
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
    """Assert that ``jax_fn`` and ``torch_fn`` compute the same thing; returns the :class:`Comparison`.

    Each input (a numpy array or a pytree of them; other leaves pass through unchanged) reaches ``jax_fn`` as a
    ``jax.Array`` and ``torch_fn`` as a ``torch.Tensor``. The outputs (any pytree of arrays, e.g. a whole model's)
    are compared leaf by leaf: same shape, and ``|jax − torch| ≤ atol + rtol · max|torch|``.

    ``grads=True`` also compares the gradients of ``Σ output · cotangent`` (a seeded standard-normal cotangent per
    floating output) with respect to every floating input not marked :func:`constant` (JAX: ``jax.vjp``; torch:
    ``torch.autograd.grad``, 0 for an input torch does not use). A gradient's ``rtol`` is relative to the larger of
    its own ``max|torch|`` and its siblings' (the gradients of inputs sharing its parent in the input pytree: a
    layer's kernel and bias, or the ``"up.weight"`` and ``"up.bias"`` keys of a flat torch state dict;
    ``sibling_scale=False``: its own only), so an analytically zero gradient (a bias before an affine-free
    normalisation) compares its rounding noise against its layer's scale.

    ``float64=True`` runs both sides in float64 (floating inputs cast, JAX with x64): compare gradients of ReLU models
    that way, since at a kink (a pre-activation within rounding of 0) two right float32 computations can take
    different derivatives. With ``referee=True`` an array outside its float32 (or half-precision) tolerance is judged
    by a float64 rerun of both functions (a ``torch.nn.Module`` as a float64 copy), see :class:`Referee`.

    Defaults: ``rtol = relative_tolerance`` of each leaf's lower-precision dtype, ``atol = 0``. Comparisons run under
    :func:`full_precision`; ``jax_fn`` (and its VJP) under ``jax.jit`` unless ``jit=False``; ``jax_device`` and
    ``torch_device`` choose where each side runs.

    Raises:
      AssertionError: naming the first differing output or gradient, the largest error, its index and the tolerance,
        then reporting every compared array; also for a shape or structure mismatch.
    """
    comparison = compare_with_torch(
        jax_fn,
        torch_fn,
        *inputs,
        grads=grads,
        tolerance=None if rtol is None else lambda name, dtype: rtol,
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
    """Run both functions on ``inputs`` and compare, as :func:`assert_matches_torch` does, without raising.

    ``tolerance(name, dtype)`` is the relative tolerance of each leaf (``"output[i]"``, ``"grad[j]"``; default
    :func:`relative_tolerance`); ``seed`` seeds the cotangents.
    """
    tolerance = tolerance or (lambda name, dtype: relative_tolerance(dtype))
    leaves, paths, constant_marks, treedef = _input_leaves(inputs)
    differentiated = [
        i for i, leaf in enumerate(leaves) if grads and _is_floating_array(leaf) and not constant_marks[i]
    ]
    run = functools.partial(
        _run_both, jax_fn, torch_fn, leaves, differentiated, treedef, seed, jax_device, torch_device, jit
    )
    try:
        pairs, output_paths, cotangents = run(float64)
    except _StructureMismatch as error:
        return Comparison((), str(error))
    grad_paths = [paths[i] for i in differentiated]
    torch_grads = [_numpy(b)[0] for _, b in pairs[len(output_paths) :]]
    siblings = _sibling_scales(grad_paths, torch_grads) if sibling_scale else [0.0] * len(torch_grads)
    places = [(f"output[{i}]", path, 0.0) for i, path in enumerate(output_paths)]
    places += [
        (f"grad[{j}]", "input" + jax.tree_util.keystr(p), s) for j, (p, s) in enumerate(zip(grad_paths, siblings))
    ]
    compared = [
        _compare_leaf(name, a, b, tolerance, atol, path=path, sibling_scale=scale)
        for (name, path, scale), (a, b) in zip(places, pairs)
    ]
    if not referee or float64 or not any(_refereeable(leaf) for leaf in compared):
        return Comparison(tuple(compared))
    try:
        exact_pairs = run(True, cotangents)[0]
        compared = [
            _referee_leaf(leaf, pair, exact_pair, tolerance, atol) if _refereeable(leaf) else leaf
            for leaf, pair, exact_pair in zip(compared, pairs, exact_pairs, strict=True)
        ]
    except Exception as error:  # noqa: BLE001 - the float32 failure stands; the report says why it was not refereed
        return Comparison(tuple(compared), referee_error=f"{type(error).__name__}: {_first_line(error)}")
    return Comparison(tuple(compared))


def _input_leaves(inputs: Sequence[Any]) -> tuple[list[Any], list[tuple], list[bool], Any]:
    """``(leaves, key paths, constant marks, treedef)`` of the inputs, each :class:`Constant` replaced by its value."""

    def is_constant(value) -> bool:
        return isinstance(value, Constant)

    def mark(value):
        return jax.tree_util.tree_map(lambda _: True, value.value) if is_constant(value) else False

    tree = jax.tree_util.tree_map(lambda v: v.value if is_constant(v) else v, list(inputs), is_leaf=is_constant)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    marks = jax.tree_util.tree_leaves(jax.tree_util.tree_map(mark, list(inputs), is_leaf=is_constant))
    return [leaf for _, leaf in with_paths], [path for path, _ in with_paths], marks, treedef


class _StructureMismatch(Exception):
    """The two functions return pytrees of different numbers of arrays."""


def _run_both(
    jax_fn, torch_fn, leaves, differentiated, treedef, seed, jax_device, torch_device, jit, float64, cotangents=None
) -> tuple[list[tuple[Any, Any]], list[str], list[np.ndarray]]:
    """``jax_fn`` (with its VJP) and ``torch_fn`` (with autograd) run on the input leaves: (jax, torch) pairs of the
    outputs, then of the gradients (none when an output's shape differs); the outputs' paths; the cotangents, seeded
    standard-normal ones unless given (cast to the outputs' dtypes). ``float64``: floating inputs cast to float64,
    JAX under x64 and a torch module as a float64 copy."""
    import torch

    if float64:
        leaves = [np.asarray(leaf, np.float64) if _is_floating_array(leaf) else leaf for leaf in leaves]
        if isinstance(torch_fn, torch.nn.Module):
            torch_fn = copy.deepcopy(torch_fn).double()
    fixed = [i for i, leaf in enumerate(leaves) if _is_floating_array(leaf) and i not in differentiated]
    with jax.enable_x64(True) if float64 else contextlib.nullcontext():
        jax_leaves = [jax.device_put(v, jax_device) if _is_array(v) else v for v in leaves]
        torch_leaves = [_to_torch(leaf, torch_device) for leaf in leaves]
        torch_differentiated = [torch_leaves[i].requires_grad_(True) for i in differentiated]

        def jax_call(float_leaves, fixed_leaves):
            current = list(jax_leaves)
            for i, leaf in zip(differentiated + fixed, [*float_leaves, *fixed_leaves]):
                current[i] = leaf
            return jax_fn(*jax.tree_util.tree_unflatten(treedef, current))

        def forward_and_vjp(float_leaves, fixed_leaves, cotangent_leaves):
            def float_outputs(float_leaves):
                out = jax_call(float_leaves, fixed_leaves)
                return [leaf for leaf in jax.tree_util.tree_leaves(out) if _is_inexact(leaf)], out

            _, vjp, out = jax.vjp(float_outputs, float_leaves, has_aux=True)
            return out, vjp(cotangent_leaves)[0]

        args = [jax_leaves[i] for i in differentiated], [jax_leaves[i] for i in fixed]
        compiled = jax.jit if jit else (lambda f: f)
        jax_grads: list = []
        with full_precision(), jax.default_device(jax_device):
            if differentiated:
                shapes = [s for s in jax.tree_util.tree_leaves(jax.eval_shape(jax_call, *args)) if _is_inexact(s)]
                if cotangents is None:
                    rng = np.random.default_rng(seed)
                    cotangents = [rng.standard_normal(s.shape).astype(np.float32) for s in shapes]
                cotangents = [c.astype(s.dtype) for c, s in zip(cotangents, shapes)]
                on_device = [jax.device_put(c, jax_device) for c in cotangents]
                jax_out, jax_grads = compiled(forward_and_vjp)(*args, on_device)
            else:
                jax_out = compiled(jax_call)(*args)
            with torch.set_grad_enabled(bool(differentiated)):
                torch_out = torch_fn(*jax.tree_util.tree_unflatten(treedef, torch_leaves))

    jax_with_paths, jax_tree = jax.tree_util.tree_flatten_with_path(jax_out)
    jax_out_leaves = [leaf for _, leaf in jax_with_paths]
    torch_out_leaves, torch_tree = jax.tree_util.tree_flatten(torch_out)
    output_paths = ["output" + (jax.tree_util.keystr(path) or "[0]") for path, _ in jax_with_paths]
    if len(jax_out_leaves) != len(torch_out_leaves):
        raise _StructureMismatch(
            f"output structures differ: jax returns {jax_tree} ({len(jax_out_leaves)} arrays), "
            f"torch returns {torch_tree} ({len(torch_out_leaves)} arrays)"
        )
    pairs = list(zip(jax_out_leaves, torch_out_leaves))
    if differentiated and all(tuple(np.shape(a)) == tuple(np.shape(b)) for a, b in pairs):
        pairs += zip(jax_grads, _torch_gradients(jax_out_leaves, torch_out_leaves, torch_differentiated, cotangents))
    return pairs, output_paths, cotangents or []


def _sibling_scales(paths: Sequence[tuple], gradients: Sequence[np.ndarray]) -> list[float]:
    """For each gradient, the largest ``max|torch|`` among the gradients whose inputs share its parent: its path
    without the last key or, for a dotted string key (torch state-dict naming, ``"up2.bias"``), with the key's layer
    part (``"up2"``) in its place; 0 for a top-level input."""
    parents: list[tuple | None] = []
    for path in paths:
        last = path[-1]
        if isinstance(last, jax.tree_util.DictKey) and isinstance(last.key, str) and "." in last.key:
            parents.append((*path[:-1], last.key.rsplit(".", 1)[0]))
        else:
            parents.append(path[:-1] if len(path) > 1 else None)
    by_parent: dict[tuple, float] = {}
    for parent, gradient in zip(parents, gradients):
        if parent is not None:
            by_parent[parent] = max(by_parent.get(parent, 0.0), _max_abs(gradient))
    return [0.0 if parent is None else by_parent[parent] for parent in parents]


def _max_abs(values: np.ndarray) -> float:
    """``max|values|`` over the finite values, 0 for an empty array."""
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def _torch_gradients(jax_out_leaves, torch_out_leaves, torch_inputs, cotangents):
    """torch gradients of ``Σ output · cotangent`` w.r.t. ``torch_inputs`` (0 for inputs the outputs ignore)."""
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
    name: str, jax_value, torch_value, tolerance, atol: float, path="", sibling_scale=0.0
) -> LeafComparison:
    actual, jax_dtype = _numpy(jax_value)
    expected, torch_dtype = _numpy(torch_value)
    rtol = tolerance(name, _lower_precision(jax_dtype, torch_dtype))
    leaf = LeafComparison(
        name,
        tuple(actual.shape),
        tuple(expected.shape),
        jax_dtype,
        torch_dtype,
        max_abs_err=0.0,
        where=None,
        jax_value=None,
        torch_value=None,
        scale=0.0,
        atol=atol,
        rtol=rtol,
        mismatched=0,
        size=int(expected.size),
        path=path,
        sibling_scale=sibling_scale,
    )
    if actual.shape != expected.shape:
        return dataclasses.replace(leaf, max_abs_err=math.inf, mismatched=leaf.size)
    if actual.size == 0:
        return leaf
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    error = _abs_error(a, b)
    where = np.unravel_index(int(np.argmax(error)), error.shape)
    scale = _max_abs(b)
    return dataclasses.replace(
        leaf,
        max_abs_err=float(error[where]),
        where=tuple(int(i) for i in where),
        jax_value=float(a[where]),
        torch_value=float(b[where]),
        scale=scale,
        mismatched=int(np.count_nonzero(error > atol + rtol * max(scale, sibling_scale))),
    )


def _numpy(value) -> tuple[np.ndarray, str]:
    """``value`` (a torch tensor, floating ones as float64, or anything numpy reads) as a numpy array, and the name
    of its own dtype."""
    import torch

    if isinstance(value, torch.Tensor):
        on_cpu = value.detach().cpu()
        return (on_cpu.double() if on_cpu.is_floating_point() else on_cpu).numpy(), str(value.dtype).removeprefix(
            "torch."
        )
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
    """``leaf`` with its :class:`Referee`: both sides' ``pair`` measured against torch's float64 result, and the two
    float64 results against each other."""
    jax64, torch64 = exact_pair
    agreement = _compare_leaf(leaf.name, jax64, torch64, tolerance, atol, sibling_scale=leaf.sibling_scale)
    truth = _numpy(torch64)[0]
    jtconv_error, torch_error = (float(np.max(_abs_error(_numpy(value)[0], truth))) for value in pair)
    referee = Referee(jtconv_error, torch_error, agreement.max_abs_err, agreement.tolerance, leaf.tolerance)
    return dataclasses.replace(leaf, referee=referee)


_PRECISION_ORDER = ["bfloat16", "float16", "float32", "float64"]


def _lower_precision(a: str, b: str) -> np.dtype:
    known = [name for name in (a, b) if name in _PRECISION_ORDER]
    return jnp.dtype(min(known, key=_PRECISION_ORDER.index) if known else "float32")


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray | np.generic | jax.Array)


def _is_floating_array(value) -> bool:
    return isinstance(value, np.ndarray | jax.Array) and jnp.issubdtype(value.dtype, jnp.floating)


def _is_inexact(value) -> bool:
    return jnp.issubdtype(value.dtype, jnp.inexact)


def _to_torch(value, device):
    """An array as a torch tensor on ``device`` (bfloat16 through float32, exactly); anything else unchanged."""
    import torch

    if not _is_array(value):
        return value
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        return torch.tensor(array.astype(np.float32), device=device).to(torch.bfloat16)
    return torch.tensor(array, device=device)
