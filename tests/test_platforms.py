"""Plans follow the platform a program is lowered for (jtconv.lowering.primitive, jtconv.plans.resolve).

Programs exported for cuda and tpu from this CPU-only host must contain the
documented GPU/TPU plan (``forward=xla dx=xla dw=xla-wgrad``): the forward one
convolution in the backward-data pattern (``lhs_dilate = stride``), the input
gradient one strided convolution, the weight gradient one backward-filter
convolution (window dilated by the stride), and no GEMM + col2im. The same
programs with ``algorithm=plan_for(..., backend=B)`` must have exactly the same
operations, and a multi-platform export must carry each platform's plan.
"""

from __future__ import annotations

import collections
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jtconv
from jtconv import testing
from jtconv.plans import measure

# (name, x shape, w shape, conv_transpose keywords, dtype)
LAYERS = [
    ("1d", (4, 16, 32), (16, 8, 4), dict(stride=2, padding=1), "float32"),
    ("2d", (8, 64, 16, 16), (64, 32, 4, 4), dict(stride=2, padding=1), "float32"),
    ("3d", (2, 8, 4, 6, 6), (8, 4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1), "float32"),
    ("groups", (2, 8, 5, 6), (8, 3, 3, 4), dict(stride=(2, 3), padding=1, groups=2), "float32"),
    ("depthwise", (4, 16, 8, 8), (16, 1, 4, 4), dict(stride=2, padding=1, groups=16), "float32"),
    ("dilation", (2, 6, 9, 9), (6, 4, 3, 3), dict(stride=2, dilation=2, padding=2, output_padding=1), "float32"),
    ("per-side", (2, 4, 7, 5), (4, 6, 5, 3), dict(stride=(3, 2), padding=((1, 3), (0, 2))), "float32"),
    ("channels-last", (2, 9, 9, 12), (12, 8, 3, 3), dict(stride=2, channels_last=True), "float32"),
    ("k16-s8", (1, 21, 8, 8), (21, 21, 16, 16), dict(stride=8, padding=4), "float32"),
    ("bfloat16", (8, 64, 16, 16), (64, 32, 4, 4), dict(stride=2, padding=1), "bfloat16"),
    ("waits-on-cpu", (16, 128, 16, 16), (128, 64, 4, 4), dict(stride=2, padding=1), "float32"),
]
IDS = [layer[0] for layer in LAYERS]


def _arrays(x_shape, w_shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    return jnp.asarray(x, dtype), jnp.asarray(w, dtype)


def _programs(kwargs, algorithm="auto"):
    def forward(x, w):
        return jtconv.conv_transpose(x, w, algorithm=algorithm, **kwargs)

    def loss(x, w):
        return jnp.sum(forward(x, w).astype(jnp.float32) ** 2)

    return jax.jit(forward), jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _export(program, platforms, *args) -> str:
    return jax.export.export(program, platforms=platforms)(*args).mlir_module()


def _operations(text: str) -> collections.Counter:
    return collections.Counter(re.findall(r"\bstablehlo\.([a-z_]+)", text))


_CONVOLUTION = re.compile(r"stablehlo\.convolution\(.*window = \{(?P<window>[^}]*)\}.*-> tensor<(?P<out>[0-9x]+)x\w+>")


def _convolutions(text: str) -> list[dict]:
    """Each convolution's window attributes (absent ones are all 1) and result shape."""
    found = []
    for line in text.splitlines():
        match = _CONVOLUTION.search(line)
        if match is None:
            continue
        window = match["window"]
        attributes = {}
        for name in ("stride", "lhs_dilate", "rhs_dilate"):
            value = re.search(rf"\b{name} = \[([0-9, ]+)\]", window)
            attributes[name] = None if value is None else tuple(int(v) for v in value[1].split(","))
        attributes["shape"] = tuple(int(v) for v in match["out"].split("x"))
        found.append(attributes)
    return found


def _ones(value, ndim):
    return value is None or value == (1,) * ndim


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs, dtype", LAYERS, ids=IDS)
def test_accelerator_exports_run_torchs_three_convolutions(platform, name, x_shape, w_shape, kwargs, dtype):
    x, w = _arrays(x_shape, w_shape, dtype)
    forward, training = _programs(kwargs)
    geom = jtconv.make_geometry(x_shape, w_shape, **kwargs)
    stride, ndim = geom.stride, geom.ndim
    y_shape = (x_shape[0], geom.out_channels) + geom.output_size
    x_ncs = (x_shape[0], geom.in_channels) + geom.input_size

    text = _export(forward, [platform], x, w)
    (conv,) = _convolutions(text)
    assert conv["lhs_dilate"] == stride and _ones(conv["stride"], ndim) and conv["shape"] == y_shape
    assert "dot_general" not in _operations(text)

    text = _export(training, [platform], x, w)
    convs = _convolutions(text)
    assert len(convs) == 3 and "dot_general" not in _operations(text)
    by_shape = {c["shape"]: c for c in convs}
    assert by_shape[y_shape]["lhs_dilate"] == stride  # the forward: backward-data pattern
    dx = by_shape[x_ncs]  # the input gradient: a strided forward convolution of the cotangent
    assert dx["stride"] == stride and _ones(dx["lhs_dilate"], ndim)
    dw = by_shape[tuple(w_shape)]  # the weight gradient: backward-filter (window dilated by the stride)
    assert dw["rhs_dilate"] == stride and _ones(dw["lhs_dilate"], ndim)


@pytest.mark.parametrize("backend, platform", [("gpu", "cuda"), ("gpu", "rocm"), ("tpu", "tpu"), ("cpu", "cpu")])
@pytest.mark.parametrize("name, x_shape, w_shape, kwargs, dtype", LAYERS, ids=IDS)
def test_an_export_holds_exactly_the_plan_that_plan_for_prints(
    backend, platform, name, x_shape, w_shape, kwargs, dtype
):
    x, w = _arrays(x_shape, w_shape, dtype)
    plan = jtconv.plan_for(x_shape, w_shape, dtype=dtype, backend=backend, **kwargs)
    for default, explicit in zip(_programs(kwargs), _programs(kwargs, algorithm=plan)):
        assert _operations(_export(default, [platform], x, w)) == _operations(_export(explicit, [platform], x, w))


def test_the_cpu_and_accelerator_plans_differ_where_the_docs_say():
    x_shape, w_shape, kwargs = (8, 64, 16, 16), (64, 32, 4, 4), dict(stride=2, padding=1)
    assert str(jtconv.plan_for(x_shape, w_shape, backend="gpu", **kwargs)).startswith(
        "forward=xla  dx=xla  dw=xla-wgrad"
    )
    x, w = _arrays(x_shape, w_shape, "float32")
    cpu = _operations(_export(_programs(kwargs)[1], ["cpu"], x, w))
    assert cpu["dot_general"] == 3 and cpu["convolution"] == 0  # GEMMs on the CPU, no convolution


def test_a_multi_platform_export_round_trips_and_its_cpu_branch_equals_torch():
    x_shape, w_shape, kwargs = (2, 6, 7, 7), (6, 4, 4, 4), dict(stride=2, padding=1)
    x, w = _arrays(x_shape, w_shape, "float32")
    forward, training = _programs(kwargs)
    exported = jax.export.deserialize(jax.export.export(training, platforms=["cpu", "cuda"])(x, w).serialize())
    assert exported.platforms == ("cpu", "cuda")
    operations = _operations(exported.mlir_module())
    assert operations["case"] >= 1 and operations["convolution"] == 3 and operations["dot_general"] >= 1
    value, (dx, dw) = exported.call(x, w)

    tx = torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(np.asarray(w), dtype=torch.float64, requires_grad=True)
    expected = (torch.nn.functional.conv_transpose2d(tx, tw, stride=2, padding=1) ** 2).sum()
    expected.backward()
    tolerance = testing.relative_tolerance(np.float32)
    assert abs(float(value) - expected.item()) <= tolerance * expected.item()
    for got, want in ((dx, tx.grad), (dw, tw.grad)):
        want = want.numpy()
        assert np.max(np.abs(np.asarray(got) - want)) <= tolerance * np.max(np.abs(want))

    y = jax.export.deserialize(jax.export.export(forward, platforms=["cpu", "tpu"])(x, w).serialize()).call(x, w)
    want = torch.nn.functional.conv_transpose2d(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(w)), **kwargs)
    assert np.max(np.abs(np.asarray(y) - want.numpy())) <= tolerance * float(want.abs().max())


@pytest.fixture
def measurements(tmp_path, monkeypatch):
    """Measured planning with an empty wisdom cache; yields the measurements made."""
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "cache"))
    measure.forget_measurements()
    found: list = []
    measure._listeners.append(found.append)
    yield found
    measure._listeners.remove(found.append)
    measure.forget_measurements()


def test_measured_planning_measures_only_for_platforms_with_local_devices(measurements):
    x_shape, w_shape, kwargs = (2, 4, 6), (4, 3, 3), dict(stride=2)
    x, w = _arrays(x_shape, w_shape, "float32")
    forward, _ = _programs(kwargs)
    with jtconv.planning("measure"):  # read when the layer is traced
        text = _export(forward, ["cuda"], x, w)
        assert measurements == []  # no CUDA device here: the estimate
        forward(x, w)  # compiled for this process's CPU: measured here
    gpu = jtconv.plan_for(x_shape, w_shape, backend="gpu", **kwargs)
    assert _operations(text) == _operations(_export(_programs(kwargs, algorithm=gpu)[0], ["cuda"], x, w))
    assert len(measurements) == 1 and json.loads(measurements[0].key)["backend"] == "cpu"


def test_an_export_for_a_platform_without_devices_uses_its_recorded_wisdom(measurements, tmp_path):
    x_shape, w_shape, kwargs = (2, 4, 6), (4, 3, 3), dict(stride=2)
    geom = jtconv.make_geometry(x_shape, w_shape, **kwargs)
    key = measure.layer_key(geom, 2, "float32", "gpu")
    stored = jtconv.Plan("matmul", "gemm", "gemm", gemm_layout="weight_copy")
    environment = {"backend": "gpu", "device_kind": "NVIDIA H100", "device_count": 1}
    from jtconv.plans import wisdom

    entry = measure.Measurement(key, {}, {}, stored, stored, 1.0).to_entry()
    document = {"format": wisdom.FORMAT_NAME, "version": wisdom.FORMAT_VERSION, "environment": environment, "key": key}
    path = tmp_path / "gpu-wisdom.json"
    path.write_text(json.dumps([dict(document, entry=entry)]))
    assert jtconv.import_wisdom(path) == 1

    x, w = _arrays(x_shape, w_shape, "float32")
    forward, _ = _programs(kwargs)
    with jtconv.planning("measure"):
        operations = _operations(_export(forward, ["cuda"], x, w))
    assert operations == _operations(_export(_programs(kwargs, algorithm=stored)[0], ["cuda"], x, w))
    assert operations["dot_general"] == 1 and all(found.from_wisdom for found in measurements)
    with jtconv.planning("measure"):
        assert jtconv.plan_for(x_shape, w_shape, backend="cuda", **kwargs) == stored


def test_nothing_reads_the_default_backend_when_planning(monkeypatch):
    """A GPU process jitting for CPU devices: the CPU program still runs the CPU plan."""
    x_shape, w_shape, kwargs = (8, 64, 16, 16), (64, 32, 4, 4), dict(stride=2, padding=1)
    x, w = _arrays(x_shape, w_shape, "float32")
    cpu = jtconv.plan_for(x_shape, w_shape, backend="cpu", **kwargs)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    training = _programs(kwargs)[1]
    expected = _operations(_programs(kwargs, algorithm=cpu)[1].lower(x, w).as_text())
    assert _operations(training.lower(x, w).as_text()) == expected
