"""Measure jtconv under sharding on 8 simulated CPU devices (run by ``test_sharding.py``).

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect when
it is set before jax is imported, and the pytest worker running
``test_sharding.py`` has usually imported jax already. So the test runs this
file as a script, ``python tests/sharding_checks.py GROUP``, and reads one JSON
record per line from stdout. This script only *measures* (errors, scales,
shardings, collectives in compiled programs); the assertions live in
``test_sharding.py``. Never import this file: it sets ``XLA_FLAGS`` at import.

Groups and the cases they measure:

- ``functional-1d`` / ``-2d`` / ``-3d``: ``jtconv.conv_transpose`` with every
  name in ``jtconv.ALGORITHMS`` (read at run time) under each layout below
  except ``data-grouped`` and ``data-explicit``; ``jtconv.conv_transpose{1,2,3}d``
  (``algorithm="auto"``, the planner's choice) under :data:`AUTO_KINDS`:

  * ``data``: input batch-sharded over mesh axis ``"data"`` (8 devices),
    weight and bias replicated;
  * ``data-explicit``: the same on a mesh whose axis is
    ``AxisType.Explicit`` (``jax.make_mesh``'s default);
  * ``channel``: weight and bias sharded on output channels over
    ``"model"``, input replicated;
  * ``depthwise``: ``groups = 8 = in_channels``: input channels, weight
    ``in_channels`` and bias sharded over ``"model"``, one group per device;
  * ``data-channel``: a 2 × 4 mesh, batch over ``"data"`` and output channels
    over ``"model"``;
  * ``shard_map-data`` / ``shard_map-channel``: ``jax.shard_map`` running a
    per-device conv_transpose (``groups = 2`` / ``1``) on the local batch /
    the local output channels.

- ``grouped``: layouts ``data-grouped`` (``data`` with ``groups = 2``) and
  ``group`` (``depthwise`` with two input channels per group); ``explicit``:
  layout ``data-explicit``. Every algorithm, 1d to 3d (``"auto"`` is one of
  them on the same shapes).

- ``linen`` / ``nnx``: ``jtconv.linen.ConvTranspose`` / ``jtconv.nnx.ConvTranspose``
  (channels last, ``algorithm="auto"``) in 1d, 2d and 3d, layouts ``data`` and
  ``channel``.

Each record holds, for the output and for the gradients of
``sum(y · cotangent)`` with respect to input, weight and bias:
``err`` (max |sharded − one device|), ``torch_err`` (max |sharded − torch|)
and ``scale`` (max |torch value|); plus whether output and input gradient
keep the expected sharding, and the collectives found in the compiled forward
program. A case that raises records ``error`` instead.
"""

from __future__ import annotations

import os
import re
import sys

DEVICE_COUNT = 8

if "jax" in sys.modules:  # pragma: no cover - a misuse, not a test outcome
    raise RuntimeError("sharding_checks.py must run in a fresh process (it sets XLA_FLAGS)")
os.environ["XLA_FLAGS"] = " ".join(
    [
        re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).strip(),
        f"--xla_force_host_platform_device_count={DEVICE_COUNT}",
    ]
).strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import functools  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
import json  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
import traceback  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
from collections.abc import Callable, Iterator  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)

import jax  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
import jax.numpy as jnp  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
import numpy as np  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
import torch  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
from jax.sharding import AxisType, Mesh, NamedSharding  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)
from jax.sharding import PartitionSpec as P  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)

import jtconv  # noqa: E402 - imported after XLA_FLAGS asks for simulated devices (above)

# Opcodes of HLO instructions that move data between devices; async forms add -start/-done.
COLLECTIVE_OPCODES = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "collective-permute",
    "collective-broadcast",
    "all-to-all",
    "ragged-all-to-all",
)
_COLLECTIVE_CALL = re.compile(r"\b(" + "|".join(re.escape(op) for op in COLLECTIVE_OPCODES) + r")(?:-start|-done)?\(")


def collectives_in(hlo_text: str) -> list[str]:
    """Distinct collective opcodes called anywhere in an HLO module's text, sorted."""
    return sorted(set(_COLLECTIVE_CALL.findall(hlo_text)))


# Per spatial rank: kernel size, input size and a geometry that exercises every argument.
GEOMETRIES: dict[int, dict] = {
    1: dict(kernel=(3,), spatial=(7,), stride=(2,), padding=(1,), output_padding=(1,), dilation=(2,)),
    2: dict(kernel=(3, 2), spatial=(5, 4), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2)),
    3: dict(
        kernel=(3, 2, 3),
        spatial=(3, 4, 3),
        stride=(2, 1, 2),
        padding=(1, 0, 1),
        output_padding=(1, 0, 0),
        dilation=(1, 2, 1),
    ),
}

# Per sharding kind: batch, in_channels, out_channels, groups, mesh shape and axis names,
# partition specs of input, weight and bias (channels-first input) and the expected output spec.
LAYOUTS: dict[str, dict] = {
    "data": dict(n=16, cin=4, cout=6, groups=1, mesh=(8,), axes=("data",), x=P("data"), w=P(), b=P(), y=P("data")),
    "data-grouped": dict(
        n=16, cin=4, cout=6, groups=2, mesh=(8,), axes=("data",), x=P("data"), w=P(), b=P(), y=P("data")
    ),
    "data-explicit": dict(
        n=16, cin=4, cout=6, groups=1, mesh=(8,), axes=("data",), explicit=True, x=P("data"), w=P(), b=P(), y=P("data")
    ),
    "channel": dict(
        n=2,
        cin=3,
        cout=16,
        groups=1,
        mesh=(8,),
        axes=("model",),
        x=P(),
        w=P(None, "model"),
        b=P("model"),
        y=P(None, "model"),
    ),
    "depthwise": dict(
        n=2,
        cin=8,
        cout=16,
        groups=8,
        mesh=(8,),
        axes=("model",),
        x=P(None, "model"),
        w=P("model"),
        b=P("model"),
        y=P(None, "model"),
    ),
    "group": dict(
        n=2,
        cin=16,
        cout=16,
        groups=8,
        mesh=(8,),
        axes=("model",),
        x=P(None, "model"),
        w=P("model"),
        b=P("model"),
        y=P(None, "model"),
    ),
    "data-channel": dict(
        n=4,
        cin=3,
        cout=8,
        groups=1,
        mesh=(2, 4),
        axes=("data", "model"),
        x=P("data"),
        w=P(None, "model"),
        b=P("model"),
        y=P("data", "model"),
    ),
    "shard_map-data": dict(
        n=16, cin=4, cout=6, groups=2, mesh=(8,), axes=("data",), shard_map=True, x=P("data"), w=P(), b=P(), y=P("data")
    ),
    "shard_map-channel": dict(
        n=2,
        cin=3,
        cout=16,
        groups=1,
        mesh=(8,),
        axes=("model",),
        shard_map=True,
        x=P(),
        w=P(None, "model"),
        b=P("model"),
        y=P(None, "model"),
    ),
}

# conv_transpose{1,2,3}d (algorithm="auto", the planner's choice) runs under these layouts.
AUTO_KINDS = ("data", "channel")

# The Flax modules take channels-last input: the sharded channel axis is the last one.
MODULE_KINDS = ("data", "channel")


def channels_last_layout(layout: dict, ndim: int) -> dict:
    """``layout`` with the specs of input and output moved to ``(N, *spatial, C)``."""

    def move(spec: P) -> P:
        entries = tuple(spec) + (None,) * (ndim + 2 - len(spec))
        return P(entries[0], *entries[2:], entries[1])

    return {**layout, "x": move(layout["x"]), "y": move(layout["y"])}


def make_mesh(layout: dict) -> Mesh:
    count = int(np.prod(layout["mesh"]))
    devices = np.array(jax.devices()[:count]).reshape(layout["mesh"])
    axis_type = AxisType.Explicit if layout.get("explicit") else AxisType.Auto
    return Mesh(devices, layout["axes"], axis_types=(axis_type,) * len(layout["axes"]))


def random_inputs(ndim: int, layout: dict, seed: int) -> dict[str, np.ndarray]:
    geom = GEOMETRIES[ndim]
    rng = np.random.default_rng(seed)
    shapes = {
        "x": (layout["n"], layout["cin"], *geom["spatial"]),
        "w": (layout["cin"], layout["cout"] // layout["groups"], *geom["kernel"]),
        "b": (layout["cout"],),
    }
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def torch_reference(ndim: int, groups: int, arrays: dict[str, np.ndarray], cotangent: np.ndarray) -> dict:
    """Output and gradients of ``sum(y · cotangent)`` from ``torch.nn.functional.conv_transpose{ndim}d``."""
    geom = GEOMETRIES[ndim]
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    conv = getattr(torch.nn.functional, f"conv_transpose{ndim}d")
    y = conv(
        tensors["x"],
        tensors["w"],
        tensors["b"],
        stride=geom["stride"],
        padding=geom["padding"],
        output_padding=geom["output_padding"],
        groups=groups,
        dilation=geom["dilation"],
    )
    (y * torch.tensor(cotangent)).sum().backward()
    return {"y": y.detach().numpy(), **{k: t.grad.numpy() for k, t in tensors.items()}}


def conv_function(ndim: int, groups: int, algorithm: str) -> Callable:
    """``f(x, w, b)`` running jtconv with the geometry of ``ndim``; ``"auto"`` uses ``conv_transpose{ndim}d``."""
    geom = GEOMETRIES[ndim]
    args = dict(
        stride=geom["stride"],
        padding=geom["padding"],
        output_padding=geom["output_padding"],
        groups=groups,
        dilation=geom["dilation"],
    )
    if algorithm == "auto":
        return functools.partial(getattr(jtconv, f"conv_transpose{ndim}d"), **args)
    return functools.partial(jtconv.conv_transpose, algorithm=algorithm, **args)


def per_device(f: Callable, mesh: Mesh, layout: dict) -> Callable:
    """``f`` run by ``jax.shard_map`` on each device's block of the arguments."""
    return jax.shard_map(f, mesh=mesh, in_specs=(layout["x"], layout["w"], layout["b"]), out_specs=layout["y"])


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(sharded, single, expected) -> dict:
    return {
        "err": _max_abs(sharded, single),
        "torch_err": _max_abs(sharded, expected),
        "scale": float(np.max(np.abs(expected))),
        "shape": list(np.shape(sharded)),
        "expected_shape": list(np.shape(expected)),
    }


def sharded_as(array: jax.Array, mesh: Mesh, spec: P) -> bool:
    return bool(array.sharding.is_equivalent_to(NamedSharding(mesh, spec), array.ndim))


def spec_of(array: jax.Array) -> str:
    return str(getattr(array.sharding, "spec", array.sharding))


def put(value: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
    """``value`` laid out on ``mesh`` as ``spec`` says (assembled from host slices: nothing to compile)."""
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def measure(
    f: Callable,
    f_single: Callable,
    arrays: dict[str, np.ndarray],
    mesh: Mesh,
    layout: dict,
    expected: dict,
    cotangent: np.ndarray,
) -> dict:
    """Run ``f(x, w, b)`` sharded as ``layout`` says and ``f_single`` (the same without
    ``shard_map``, if any) on one device; gradients too.

    The gradients of ``sum(y · cotangent)`` are the vector-Jacobian product ``vjp(cotangent)``.
    """
    device = jax.devices()[0]
    single = [jax.device_put(arrays[name], device) for name in ("x", "w", "b")]
    sharded = [put(arrays[name], mesh, layout[name]) for name in ("x", "w", "b")]

    compiled = jax.jit(f).lower(*sharded).compile()
    y = compiled(*sharded)
    hlo = compiled.as_text()

    def forward_and_gradients(function: Callable) -> Callable:
        def run(x, w, b, ct):
            y, vjp = jax.vjp(function, x, w, b)
            return y, vjp(ct)

        return jax.jit(run)

    y_single, grads_single = forward_and_gradients(f_single)(*single, jax.device_put(cotangent, device))
    _, grads = forward_and_gradients(f)(*sharded, put(cotangent, mesh, layout["y"]))

    record = {
        "output": compare(y, y_single, expected["y"]),
        "reference_on_one_device": len(y_single.devices()) == 1,
        "output_sharded_as_expected": sharded_as(y, mesh, layout["y"]),
        "output_spec": spec_of(y),
        "expected_output_spec": str(layout["y"]),
        "forward_collectives": collectives_in(hlo),
        "input_grad_sharded_as_input": sharded_as(grads[0], mesh, layout["x"]),
        "input_grad_spec": spec_of(grads[0]),
    }
    for name, g, g_single in zip(("x", "w", "b"), grads, grads_single):
        record[f"grad_{name}"] = compare(g, g_single, expected[name])
    return record


# Layouts measured in their own groups (one per layout, all dimensions and algorithms) because
# they hit limits outside jtconv's usual code path; see the groups' docstrings below.
SEPARATE_GROUPS = {"grouped": ("data-grouped", "group"), "explicit": ("data-explicit",)}


def functional_records(ndim: int) -> Iterator[dict]:
    """Every algorithm under every layout of :data:`LAYOUTS` except :data:`SEPARATE_GROUPS`';
    ``conv_transpose{ndim}d`` under :data:`AUTO_KINDS`."""
    separate = {kind for kinds in SEPARATE_GROUPS.values() for kind in kinds}
    cases = [(algorithm, kind) for algorithm in jtconv.ALGORITHMS for kind in LAYOUTS if kind not in separate]
    cases += [("auto", kind) for kind in AUTO_KINDS]
    yield from _functional_cases(ndim, cases)


def separate_group_records(group: str) -> Iterator[dict]:
    """The layouts of ``group``, every algorithm, 1d to 3d.

    ``grouped`` (``groups > 1`` with several input channels per group, sharded
    on the batch or on the groups): XLA's SPMD partitioner gives up on grouped
    convolutions that are not depthwise (openxla/xla#47945) and all-gathers
    the operands onto every device.

    ``explicit`` (batch-sharded on a mesh with ``AxisType.Explicit`` axes, what
    ``jax.make_mesh`` builds by default): sharding is part of the types, and
    JAX rejects at trace time reshapes whose output sharding it cannot infer.
    """
    for ndim in GEOMETRIES:
        cases = [(a, kind) for kind in SEPARATE_GROUPS[group] for a in jtconv.ALGORITHMS]
        yield from _functional_cases(ndim, cases)


def _functional_cases(ndim: int, cases: list[tuple[str, str]]) -> Iterator[dict]:
    for algorithm, kind in cases:
        layout = LAYOUTS[kind]
        seed = list(LAYOUTS).index(kind)

        def build(mesh: Mesh, layout=layout, algorithm=algorithm) -> tuple[Callable, Callable]:
            f = conv_function(ndim, layout["groups"], algorithm)
            return (per_device(f, mesh, layout) if layout.get("shard_map") else f), f

        yield run_case(f"functional/{ndim}d/{algorithm}/{kind}", ndim, layout, seed, build)


def module_records(module: str) -> Iterator[dict]:
    """``jtconv.{module}.ConvTranspose`` (channels last, ``algorithm="auto"``), data- and channel-parallel."""
    for ndim in GEOMETRIES:
        for seed, kind in enumerate(MODULE_KINDS):
            layout = LAYOUTS[kind]

            def build(mesh: Mesh, layout=layout, ndim=ndim) -> tuple[Callable, Callable]:
                f = module_function(module, ndim, layout, "auto")
                return f, f

            yield run_case(f"{module}/{ndim}d/auto/{kind}", ndim, layout, seed, build, channels_last=True)


def module_function(module: str, ndim: int, layout: dict, algorithm: str) -> Callable:
    """``f(x, kernel, bias)`` applying a Flax ``ConvTranspose`` with those parameters to channels-last ``x``."""
    geom = GEOMETRIES[ndim]
    hyper = dict(
        strides=geom["stride"],
        padding=geom["padding"],
        output_padding=geom["output_padding"],
        kernel_dilation=geom["dilation"],
        feature_group_count=layout["groups"],
        algorithm=algorithm,
    )
    if module == "linen":
        import jtconv.linen

        layer = jtconv.linen.ConvTranspose(features=layout["cout"], kernel_size=geom["kernel"], **hyper)
        return lambda x, w, b: layer.apply({"params": {"kernel": w, "bias": b}}, x)

    from flax import nnx

    import jtconv.nnx

    layer = jtconv.nnx.ConvTranspose(layout["cin"], layout["cout"], geom["kernel"], rngs=nnx.Rngs(0), **hyper)
    graphdef, state = nnx.split(layer)

    def apply(x, w, b):
        params = jax.tree.map(lambda v: v, state)
        nnx.replace_by_pure_dict(params, {"kernel": w, "bias": b})
        return nnx.merge(graphdef, params)(x)

    return apply


def run_case(
    case: str,
    ndim: int,
    layout: dict,
    seed: int,
    build: Callable[[Mesh], tuple[Callable, Callable]],
    channels_last: bool = False,
) -> dict:
    """Measure ``build(mesh)``'s sharded and single-device functions (see :func:`measure`)
    under ``layout``; a case that raises records ``error``."""
    record = {"case": case, "ndim": ndim}
    try:
        arrays = random_inputs(ndim, layout, seed)
        cotangent = _cotangent(ndim, layout, arrays, seed)
        expected = torch_reference(ndim, layout["groups"], arrays, cotangent)
        if channels_last:
            layout = channels_last_layout(layout, ndim)
            arrays["x"] = np.moveaxis(arrays["x"], 1, -1)
            cotangent = np.moveaxis(cotangent, 1, -1)
            expected = {**expected, "y": np.moveaxis(expected["y"], 1, -1), "x": np.moveaxis(expected["x"], 1, -1)}
        mesh = make_mesh(layout)
        record.update(measure(*build(mesh), arrays, mesh, layout, expected, cotangent))
    except Exception:  # noqa: BLE001 - reported to the test, which fails on it
        record["error"] = traceback.format_exc(limit=-6)
    return record


def _cotangent(ndim: int, layout: dict, arrays: dict[str, np.ndarray], seed: int) -> np.ndarray:
    shape = jax.eval_shape(conv_function(ndim, layout["groups"], "auto"), *arrays.values()).shape
    return np.random.default_rng(1000 + seed).standard_normal(shape).astype(np.float32)


def run_group(group: str) -> Iterator[dict]:
    if group.startswith("functional-") and group.endswith("d"):
        yield from functional_records(int(group[len("functional-") : -1]))
    elif group in SEPARATE_GROUPS:
        yield from separate_group_records(group)
    elif group in ("linen", "nnx"):
        yield from module_records(group)
    else:
        raise SystemExit(f"unknown group {group!r}")


def control_collectives() -> list[str]:
    """Collectives in a program that must have one (a sum over a batch-sharded axis): proves the detector works."""
    mesh = make_mesh(LAYOUTS["data"])
    x = jax.device_put(np.ones((16, 3), np.float32), NamedSharding(mesh, P("data")))
    return collectives_in(jax.jit(jnp.sum).lower(x).compile().as_text())


def main(argv: list[str]) -> int:
    header = {
        "devices": len(jax.devices()),
        "algorithms": list(jtconv.ALGORITHMS),
        "control_collectives": control_collectives(),
    }
    print(json.dumps(header), flush=True)
    for group in argv:
        for record in run_group(group):
            print(json.dumps({"group": group, **record}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
