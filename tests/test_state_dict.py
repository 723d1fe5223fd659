"""jtconv.state_dict: whole torch state dicts ⇄ Flax variables, checked against torch.

Every model here is built in torch, given non-trivial values (running
statistics, norm affines, weight-norm factors) through ``load_state_dict``,
converted, and compared with torch's eval-mode output. Tolerance (float32):
``atol = 1e-5 · max|y_torch|``, ``rtol = 0``. Round trips must be exact.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as tnn
from flax import nnx

from jtconv import state_dict as sd
from jtconv.linen import ConvTranspose
from jtconv.nnx import ConvTranspose as NnxConvTranspose
from jtconv.testing import assert_matches_torch, constant

parametrizations = tnn.utils.parametrizations


def old_weight_norm(module, dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return tnn.utils.weight_norm(module, dim=dim)


def randomize(model: tnn.Module, seed: int) -> tnn.Module:
    """Random values for every floating entry, loaded with load_state_dict (positive variances)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            noise = torch.randn(value.shape, generator=generator)
            value = 0.5 + torch.rand(value.shape, generator=generator) if key.endswith("running_var") else 0.5 * noise
        state[key] = value
    model.load_state_dict(state)
    return model.eval()


def assert_close(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


def numpy_state(model: tnn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# --- a decoder with every supported layer kind --------------------------------------------


class TorchDecoder(tnn.Module):
    def __init__(self):
        super().__init__()
        self.embed = tnn.Embedding(5, 12)
        self.fc = tnn.Linear(12, 72)
        self.ln = tnn.LayerNorm(72)
        self.up1 = tnn.ConvTranspose2d(8, 6, 4, 2, 1, groups=2)
        self.bn = tnn.BatchNorm2d(6)
        self.conv = tnn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.gn = tnn.GroupNorm(2, 6)
        self.up2 = tnn.ConvTranspose2d(6, 4, 3, 2, 1, output_padding=1)
        self.inorm = tnn.InstanceNorm2d(4, affine=True)
        self.out = tnn.Conv2d(4, 3, 3, padding=1)

    def forward(self, labels, z):
        h = torch.relu(self.ln(self.fc(self.embed(labels) + z))).view(-1, 8, 3, 3)
        h = torch.relu(self.bn(self.up1(h)))
        h = torch.relu(self.gn(self.conv(h)))
        h = torch.relu(self.inorm(self.up2(h)))
        return torch.tanh(self.out(h))


class FlaxDecoder(nn.Module):
    """The same decoder, channels-last inside, NCHW out; names equal torch's."""

    @nn.compact
    def __call__(self, labels, z):
        h = nn.Dense(72, name="fc")(nn.Embed(5, 12, name="embed")(labels) + z)
        h = nn.relu(nn.LayerNorm(epsilon=1e-5, name="ln")(h))
        h = h.reshape(-1, 8, 3, 3).transpose(0, 2, 3, 1)
        h = ConvTranspose(6, (4, 4), strides=2, padding=1, feature_group_count=2, name="up1")(h)
        h = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(h))
        h = nn.Conv(6, (3, 3), padding=1, feature_group_count=3, name="conv")(h)
        h = nn.relu(nn.GroupNorm(num_groups=2, epsilon=1e-5, name="gn")(h))
        h = ConvTranspose(4, (3, 3), strides=2, padding=1, output_padding=1, name="up2")(h)
        h = nn.relu(nn.InstanceNorm(epsilon=1e-5, name="inorm")(h))
        return jnp.tanh(nn.Conv(3, (3, 3), padding=1, name="out")(h)).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    model = randomize(TorchDecoder(), seed=1)
    labels, z = np.array([1, 4]), torch.randn(2, 12, generator=torch.Generator().manual_seed(2)).numpy()
    with torch.no_grad():
        expected = model(torch.tensor(labels), torch.tensor(z)).numpy()
    flax_model = FlaxDecoder()
    template = jax.eval_shape(flax_model.init, jax.random.key(0), labels, z)
    return model, flax_model, template, (labels, z), expected


def test_decoder_converts_both_ways_with_torch_outputs(decoder):
    model, flax_model, template, inputs, expected = decoder
    conversion = sd.torch_to_flax(model.state_dict(), lambda name: name, template=template)
    assert conversion.complete and set(conversion.variables) == {"params", "batch_stats"}
    kinds = {name: layer.kind for name, layer in conversion.layers.items()}
    assert kinds == {
        "embed": "embedding",
        "fc": "linear",
        "ln": "norm",
        "up1": "conv_transpose",
        "bn": "batch_norm",
        "conv": "conv",
        "gn": "norm",
        "up2": "conv_transpose",
        "inorm": "norm",
        "out": "conv",
    }
    np.testing.assert_array_equal(conversion.variables["batch_stats"]["bn"]["var"], model.bn.running_var.numpy())
    assert_close(jax.jit(flax_model.apply)(conversion.variables, *inputs), expected)

    back = sd.flax_to_torch(conversion.variables, lambda name: name, template=model.state_dict())
    assert back.complete and set(back.state_dict) == set(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict[key], value.numpy(), err_msg=key)

    # The reverse direction feeds a fresh torch model (tensors=True: load_state_dict takes them as they are).
    fresh = TorchDecoder().eval()
    fresh.load_state_dict(
        sd.flax_to_torch(conversion.variables, lambda n: n, template=fresh.state_dict(), tensors=True).state_dict
    )
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(*(torch.tensor(a) for a in inputs)).numpy(), expected)


def test_decoder_kinds_from_torch_model_need_no_template(decoder):
    model, flax_model, template, inputs, expected = decoder
    kinds = sd.torch_layer_kinds(model)
    assert kinds["up1"] == "conv_transpose" and kinds["bn"] == "batch_norm" and kinds["inorm"] == "instance_norm"
    conversion = sd.torch_to_flax(numpy_state(model), {"": ""}, kinds=kinds)
    assert_close(jax.jit(flax_model.apply)(conversion.variables, *inputs), expected)
    back = sd.flax_to_torch(conversion.variables, {"": ""}, kinds=kinds)
    assert set(back.state_dict) == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}


def test_batch_norm_statistics_as_constants_in_assert_matches_torch(decoder):
    """Gradients of the whole decoder with respect to every torch parameter: both sides take the
    torch state dict (the JAX side converts it inside jit), running statistics marked constant."""
    model, flax_model, template, (labels, z), _ = decoder
    state = {
        key: constant(value) if "running" in key or "num_batches" in key else value
        for key, value in numpy_state(model).items()
    }

    def jax_fn(state, labels, z):
        variables = sd.torch_to_flax(state, lambda n: n, template=template).variables
        return flax_model.apply(variables, labels, z)

    def torch_fn(state, labels, z):
        return torch.func.functional_call(model, state, (labels, z))

    comparison = assert_matches_torch(jax_fn, torch_fn, state, labels, z, grads=True)
    gradient_paths = [leaf.path for leaf in comparison.leaves if leaf.name.startswith("grad")]
    assert "input[0]['up1.weight']" in gradient_paths and "input[2]" in gradient_paths
    assert not any("running" in path for path in gradient_paths)


# --- one layer of each kind and rank ------------------------------------------------------------

RANK_CASES = {
    # name: (torch layer, flax layer, input shape (N, C, *spatial), kind)
    "conv_transpose1d": (
        lambda: tnn.ConvTranspose1d(4, 6, 5, stride=3, padding=2, output_padding=1, groups=2),
        lambda: ConvTranspose(6, (5,), strides=3, padding=2, output_padding=1, feature_group_count=2),
        (2, 4, 6),
        "conv_transpose",
    ),
    "conv_transpose3d": (
        lambda: tnn.ConvTranspose3d(2, 4, (2, 3, 2), stride=2, dilation=(1, 2, 1)),
        lambda: ConvTranspose(4, (2, 3, 2), strides=2, kernel_dilation=(1, 2, 1)),
        (1, 2, 3, 2, 3),
        "conv_transpose",
    ),
    "conv1d": (
        lambda: tnn.Conv1d(4, 6, 5, stride=2, padding=2, dilation=2, groups=2),
        lambda: nn.Conv(6, (5,), strides=2, padding=2, kernel_dilation=2, feature_group_count=2),
        (2, 4, 11),
        "conv",
    ),
    "conv3d": (
        lambda: tnn.Conv3d(3, 4, (3, 2, 3), padding=1),
        lambda: nn.Conv(4, (3, 2, 3), padding=1),
        (1, 3, 4, 5, 4),
        "conv",
    ),
}


@pytest.mark.parametrize("name", sorted(RANK_CASES))
def test_each_rank_converts_both_ways(name):
    make_torch, make_flax, shape, kind = RANK_CASES[name]
    torch.manual_seed(sorted(RANK_CASES).index(name))
    layer = randomize(make_torch(), seed=3)
    x = torch.randn(*shape)
    conversion = sd.torch_to_flax(layer.state_dict(), lambda n: "layer", kinds={"": kind})
    assert conversion.layers[""].kind == kind
    params = conversion.variables["params"]["layer"]
    y = make_flax().apply({"params": params}, np.moveaxis(x.numpy(), 1, -1))
    with torch.no_grad():
        assert_close(np.moveaxis(np.asarray(y), -1, 1), layer(x).numpy())
    back = sd.flax_to_torch(conversion.variables, lambda n: "layer", template=layer.state_dict())
    assert back.layers[""].kind == kind  # decided by the template's weight shape
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(back.state_dict[key], value.numpy())


# --- weight-normed and spectral-normed layers in state dicts -----------------------------------


class TorchNormed(tnn.Module):
    """A HiFi-GAN-like stack with every weight-norm form (forward reads only converted weights)."""

    def __init__(self):
        super().__init__()
        self.pre = old_weight_norm(tnn.Conv1d(4, 6, 3, padding=1))
        self.ups = tnn.ModuleList(
            [
                old_weight_norm(tnn.ConvTranspose1d(6, 4, 4, 2, 1)),
                parametrizations.weight_norm(tnn.ConvTranspose1d(4, 4, 6, 2, 2, groups=2), dim=None),
            ]
        )
        self.post = parametrizations.weight_norm(tnn.Conv1d(4, 2, 3, padding=1), dim=1)

    def forward(self, x):
        x = self.pre(x)
        for up in self.ups:
            x = up(torch.nn.functional.leaky_relu(x, 0.1))
        return torch.tanh(self.post(x))


class FlaxNormed(nn.Module):
    """NCL in and out, names as linen_path gives them."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3,), padding=1, name="pre")(x.transpose(0, 2, 1))
        for i, (kernel, padding, groups) in enumerate([(4, 1, 1), (6, 2, 2)]):
            x = ConvTranspose(4, (kernel,), strides=2, padding=padding, feature_group_count=groups, name=f"ups_{i}")(
                nn.leaky_relu(x, 0.1)
            )
        return jnp.tanh(nn.Conv(2, (3,), padding=1, name="post")(x)).transpose(0, 2, 1)


@pytest.fixture(scope="module")
def normed():
    torch.manual_seed(4)
    model = randomize(TorchNormed(), seed=5)  # load_state_dict only: the hooks' module.weight is stale
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(6))
    flax_model = FlaxNormed()
    template = jax.eval_shape(flax_model.init, jax.random.key(0), x.numpy())
    return model, flax_model, template, x


def test_weight_norm_state_dict_converts_both_ways(normed):
    model, flax_model, template, x = normed
    state = numpy_state(model)
    assert {"pre.weight_g", "ups.1.parametrizations.weight.original0", "post.parametrizations.weight.original1"} <= set(
        state
    )
    conversion = sd.torch_to_flax(state, sd.linen_path, template=template)
    forms = {name: layer.weight_form for name, layer in conversion.layers.items()}
    assert forms == {"pre": "weight_norm", "ups.0": "weight_norm", "ups.1": "weight_norm_p", "post": "weight_norm_p"}
    y = jax.jit(flax_model.apply)(conversion.variables, x.numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(y, expected)

    # Back into a fresh weight-normed model: g = ‖w‖ (with each layer's dim), v = w.
    fresh = TorchNormed().eval()
    back = sd.flax_to_torch(conversion.variables, sd.linen_path, template=fresh.state_dict())
    assert back.complete and set(back.state_dict) == set(fresh.state_dict())
    assert back.state_dict["ups.1.parametrizations.weight.original0"].shape == ()  # dim=None: one scalar g
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.state_dict.items()})
    with torch.no_grad():
        assert_close(fresh(x).numpy(), expected)
    np.testing.assert_array_equal(
        back.state_dict["ups.0.weight_v"], np.asarray(conversion.variables["params"]["ups_0"]["kernel"])
    )


def test_conversion_is_differentiable_with_respect_to_g_and_v(normed):
    """Fine-tuning the factors: gradients w.r.t. weight_g / weight_v through the converter equal torch's."""
    model, flax_model, template, x = normed

    def jax_fn(state, x):
        return flax_model.apply(sd.torch_to_flax(state, sd.linen_path, template=template).variables, x)

    def torch_fn(state, x):
        return torch.func.functional_call(model, state, (x,))

    comparison = assert_matches_torch(jax_fn, torch_fn, numpy_state(model), x.numpy(), grads=True)
    assert "input[0]['pre.weight_g']" in [leaf.path for leaf in comparison.leaves]


@pytest.mark.parametrize("style", ["hooks", "parametrizations"])
def test_spectral_norm_state_dicts_use_stored_vectors(style):
    make = tnn.utils.spectral_norm if style == "hooks" else parametrizations.spectral_norm
    model = tnn.Sequential(make(tnn.ConvTranspose1d(4, 6, 4, 2, 1)), make(tnn.Conv1d(6, 3, 3, padding=1)))
    model = randomize(model, seed=7)
    state = numpy_state(model)
    kinds = {"0": "conv_transpose", "1": "conv"}
    conversion = sd.torch_to_flax(state, sd.linen_path, kinds=kinds)
    assert [layer.weight_form for layer in conversion.layers.values()] == [
        "spectral_norm" if style == "hooks" else "spectral_norm_p"
    ] * 2
    params = conversion.variables["params"]
    x = torch.randn(2, 4, 5)
    h = ConvTranspose(6, (4,), strides=2, padding=1).apply(
        {"params": params["layers_0"]}, np.moveaxis(x.numpy(), 1, -1)
    )
    y = nn.Conv(3, (3,), padding=1).apply({"params": params["layers_1"]}, h)
    with torch.no_grad():
        assert_close(np.moveaxis(np.asarray(y), -1, 1), model(x).numpy())

    # A plain weight cannot become w_orig / σ(w_orig): reported, not guessed.
    with pytest.raises(ValueError, match="cannot be written from a plain weight"):
        sd.flax_to_torch(conversion.variables, sd.linen_path, template=model.state_dict(), kinds=kinds)
    # A non-default dim: the stored vectors do not fit torch's default, the layer is reported.
    wrong = sd.torch_to_flax(state, sd.linen_path, kinds={"0": "conv", "1": "conv"}, strict=False)
    assert "spectral norm vectors" in wrong.unused[next(k for k in wrong.unused if k.startswith("0."))][1]
    fixed = sd.torch_to_flax(state, sd.linen_path, kinds={"0": "conv", "1": "conv"}, spectral_norm_dims={"0": 1})
    np.testing.assert_array_equal(
        fixed.variables["params"]["layers_0"]["kernel"], np.transpose(params["layers_0"]["kernel"], (2, 1, 0))
    )


def test_conv_transpose_layers_of_a_sequential_by_name_convert_both_ways():
    """Only the transposed convolutions of a model, named by a dict's ``get`` (``None``: left out)."""
    torch.manual_seed(0)
    model = randomize(
        tnn.Sequential(
            tnn.ConvTranspose2d(8, 6, 4, 1, 0, bias=False), tnn.BatchNorm2d(6), tnn.ConvTranspose2d(6, 3, 4, 2, 1)
        ),
        seed=9,
    )
    kinds = {n: k for n, k in sd.torch_layer_kinds(model).items() if k == "conv_transpose"}
    assert kinds == {"0": "conv_transpose", "2": "conv_transpose"}
    names = {"0": "up0", "2": "up1"}
    conversion = sd.torch_to_flax(model.state_dict(), names.get, kinds=kinds, strict=False)
    params = conversion.variables["params"]
    assert (
        set(params) == {"up0", "up1"} and set(params["up0"]) == {"kernel"} and set(params["up1"]) == {"kernel", "bias"}
    )
    assert {key for key in conversion.unused} == {k for k in model.state_dict() if k.startswith("1.")}
    np.testing.assert_array_equal(params["up1"]["kernel"], model[2].weight.detach().numpy())
    back = sd.flax_to_torch(conversion.variables, names.get, kinds=kinds)
    assert set(back.state_dict) == {"0.weight", "2.weight", "2.bias"}
    for key, value in back.state_dict.items():
        np.testing.assert_array_equal(value, model.state_dict()[key].numpy())
    x = torch.randn(2, 6, 4, 4)
    module = ConvTranspose(features=3, kernel_size=(4, 4), strides=2, padding=1, channels_first=True)
    with torch.no_grad():
        assert_close(module.apply({"params": params["up1"]}, x.numpy()), model[2](x).numpy())


def test_safetensors_checkpoint_converts_without_torch(normed, tmp_path):
    """Reading a safetensors file and converting it imports no torch."""
    from safetensors.numpy import save_file

    model, flax_model, template, x = normed
    save_file(numpy_state(model), str(tmp_path / "model.safetensors"))
    np.save(tmp_path / "x.npy", x.numpy())
    script = f"""
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from jtconv.interop import load_state_dict
from jtconv.linen import ConvTranspose
from jtconv.state_dict import torch_to_flax, linen_path
{inspect.getsource(FlaxNormed)}
x = np.load({str(tmp_path / "x.npy")!r})
model = FlaxNormed()
template = jax.eval_shape(model.init, jax.random.key(0), x)
state = load_state_dict({str(tmp_path / "model.safetensors")!r})
variables = torch_to_flax(state, linen_path, template=template).variables
np.save({str(tmp_path / "y.npy")!r}, np.asarray(model.apply(variables, x)))
"""
    runner = "import sys; sys.modules['torch'] = None; exec(sys.stdin.read())"
    result = subprocess.run([sys.executable, "-c", runner], input=script, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        assert_close(np.load(tmp_path / "y.npy"), model(x).numpy())


# --- names, kinds, layouts ---------------------------------------------------------------------


def test_linen_path_and_prefix_names():
    assert sd.linen_path("resblocks.3.convs1.2") == "resblocks_3/convs1_2"
    assert sd.linen_path("0.1") == "layers_0/layers_1"
    assert sd.linen_path("blocks.0.1.conv") == "blocks_0/layers_1/conv"
    assert sd.linen_path("") == ""
    state = {
        "ups.0.weight": np.zeros((2, 3, 4)),
        "body.1.conv.weight": np.zeros((3, 2, 3)),
        "head.weight": np.zeros((2, 3)),
    }
    kinds = {"ups.*": "conv_transpose", "body.*": "conv", "head": "linear"}
    conversion = sd.torch_to_flax(state, {"ups.": "ups_", "body.": "trunk/", "head": "out"}, kinds=kinds)
    params = conversion.variables["params"]
    assert params["ups_0"]["kernel"].shape == (2, 3, 4)
    assert params["trunk"]["1"]["conv"]["kernel"].shape == (3, 2, 3)
    assert params["out"]["kernel"].shape == (3, 2)
    assert {name: layer.decided_by for name, layer in conversion.layers.items()} == dict.fromkeys(
        state and conversion.layers, "kinds"
    )


def test_nnx_layout_fills_an_nnx_model():
    torch_model = randomize(
        tnn.Sequential(tnn.ConvTranspose1d(3, 4, 4, 2, 1), tnn.BatchNorm1d(4), tnn.Conv1d(4, 2, 3, padding=1)), seed=8
    )

    class NnxModel(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [
                    NnxConvTranspose(3, 4, (4,), strides=2, padding=1, rngs=rngs),
                    nnx.BatchNorm(4, use_running_average=True, epsilon=1e-5, rngs=rngs),
                    nnx.Conv(4, 2, (3,), padding=1, rngs=rngs),
                ]
            )

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    model = NnxModel(nnx.Rngs(0))
    state = nnx.state(model)
    conversion = sd.torch_to_flax(torch_model.state_dict(), lambda n: f"layers/{n}", template=state, layout="nnx")
    assert conversion.complete
    nnx.replace_by_pure_dict(state, conversion.variables)
    nnx.update(model, state)
    x = torch.randn(2, 3, 5)
    with torch.no_grad():
        assert_close(np.moveaxis(np.asarray(model(np.moveaxis(x.numpy(), 1, -1))), -1, 1), torch_model(x).numpy())
    back = sd.flax_to_torch(nnx.state(model), lambda n: f"layers/{n}", template=torch_model.state_dict(), layout="nnx")
    for key, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(back.state_dict[key]), value.numpy(), err_msg=key)


# --- reports: unused, missing, undecidable; argument errors ---------------------------------------


def test_report_lists_every_unused_and_missing_key_with_its_shape(decoder):
    model, flax_model, template, *_ = decoder
    state = numpy_state(model)
    state["extra.scale_factor"] = np.ones(3, np.float32)  # no supported parameter
    state["fc.weight_g"] = np.ones((72, 1), np.float32)  # an incomplete weight form
    conversion = sd.torch_to_flax(state, lambda n: None if n == "gn" else n, template=template, strict=False)
    assert conversion.unused["extra.scale_factor"] == ((3,), conversion.unused["extra.scale_factor"][1])
    assert "no supported weight form" in conversion.unused["fc.weight"][1]
    assert (
        conversion.unused["gn.weight"][0] == (6,) and "maps layer 'gn' to nothing" in conversion.unused["gn.weight"][1]
    )
    assert conversion.missing["params/gn/scale"][0] == (6,) and conversion.missing["params/fc/kernel"][0] == (12, 72)
    with pytest.raises(ValueError, match=r"(?s)unused 'extra.scale_factor' \(3,\).*missing 'params/gn/bias' \(6,\)"):
        sd.torch_to_flax(state, lambda n: None if n == "gn" else n, template=template)


def test_template_shape_mismatch_is_reported(decoder):
    model, flax_model, template, *_ = decoder
    bad = jax.tree_util.tree_map(lambda leaf: leaf, template)
    bad["params"]["up2"]["kernel"] = jax.ShapeDtypeStruct((6, 4, 5, 5), jnp.float32)
    conversion = sd.torch_to_flax(model.state_dict(), lambda n: n, template=bad, strict=False)
    assert "neither as a conv" in conversion.unused["up2.weight"][1]
    assert conversion.missing["params/up2/kernel"][0] == (6, 4, 5, 5)


def test_undecidable_kinds_are_reported_never_guessed():
    square = {"w.weight": np.arange(81.0, dtype=np.float32).reshape(3, 3, 3, 3)}
    conversion = sd.torch_to_flax(square, lambda n: n, strict=False)
    assert "cannot tell which kind" in conversion.unused["w.weight"][1]
    template = {"params": {"w": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 3), jnp.float32)}}}
    conversion = sd.torch_to_flax(square, lambda n: n, template=template, strict=False)
    assert "both as a conv and as a conv_transpose" in conversion.unused["w.weight"][1]
    explicit = sd.torch_to_flax(square, lambda n: n, template=template, kinds={"w": "conv"})
    np.testing.assert_array_equal(
        explicit.variables["params"]["w"]["kernel"], np.transpose(square["w.weight"], (2, 3, 1, 0))
    )
    embedding_or_linear = {"e.weight": np.zeros((5, 4), np.float32)}
    assert "cannot tell" in sd.torch_to_flax(embedding_or_linear, lambda n: n, strict=False).unused["e.weight"][1]
    running = {"n.weight": np.ones(2), "n.running_mean": np.zeros(2), "n.running_var": np.ones(2)}
    refused = sd.torch_to_flax(running, lambda n: n, kinds={"n": "instance_norm"}, strict=False)
    assert "no running statistics" in refused.unused["n.running_mean"][1]


def test_argument_errors_name_the_argument():
    state = {"a.weight": np.zeros((2, 3))}
    with pytest.raises(TypeError, match="names"):
        sd.torch_to_flax(state, 3)
    with pytest.raises(ValueError, match="kinds"):
        sd.torch_to_flax(state, lambda n: n, kinds={"a": "dense"})
    with pytest.raises(ValueError, match="layout"):
        sd.torch_to_flax(state, lambda n: n, layout="haiku")
    with pytest.raises(TypeError, match="state_dict"):
        sd.torch_to_flax([1, 2], lambda n: n)
    with pytest.raises(ValueError, match="template= .* or kinds="):
        sd.flax_to_torch({"params": {}}, lambda n: n)
    with pytest.raises(TypeError, match="template"):
        sd.flax_to_torch({"params": {}}, lambda n: n, template=[1])


def test_linear_layers_convert_both_ways_and_more_argument_errors():
    w = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    b = np.array([1.0, 2.0], np.float32)
    to_flax = sd.torch_to_flax({"fc.weight": w, "fc.bias": b}, lambda n: n)  # a 2-d weight with a bias: linear
    np.testing.assert_array_equal(to_flax.variables["params"]["fc"]["kernel"], w.T)
    to_torch = sd.flax_to_torch(to_flax.variables, lambda n: n, kinds={"fc": "linear"})
    np.testing.assert_array_equal(to_torch.state_dict["fc.weight"], w)
    np.testing.assert_array_equal(to_torch.state_dict["fc.bias"], b)
    lone_bias = sd.torch_to_flax({"x.bias": b}, lambda n: n, strict=False)
    assert "a bias without a weight" in lone_bias.unused["x.bias"][1]
    with pytest.raises(ValueError, match="kinds must name layers exactly"):
        sd.flax_to_torch(to_flax.variables, lambda n: n, kinds={"f*": "linear"})
    with pytest.raises(ValueError, match="layout must be 'linen' or 'nnx'"):
        sd.flax_to_torch(to_flax.variables, lambda n: n, kinds={"fc": "linear"}, layout="haiku")
    with pytest.raises(TypeError, match="variables must be a nested dict"):
        sd.flax_to_torch([1], lambda n: n, kinds={"fc": "linear"})


# --- report branches, on tiny NumPy state dicts ------------------------------------------------


def identity(name: str) -> str:
    return name


def struct(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def arange(*shape: int) -> np.ndarray:
    return np.arange(float(np.prod(shape)), dtype=np.float32).reshape(shape)


# --- torch -> Flax ----------------------------------------------------------------------------


def test_prefix_names_leave_out_layers_no_prefix_matches():
    state = {"ups.0.weight": arange(2, 3, 4), "other.weight": arange(2, 3, 4)}
    conversion = sd.torch_to_flax(state, {"ups.": "ups_"}, kinds={"*": "conv_transpose"}, strict=False)
    np.testing.assert_array_equal(conversion.variables["params"]["ups_0"]["kernel"], state["ups.0.weight"])
    assert conversion.unused["other.weight"] == ((2, 3, 4), "names maps layer 'other' to nothing")


def test_template_of_plain_shape_tuples_checks_shapes():
    state = {"fc.weight": arange(2, 3), "fc.bias": np.ones(2, np.float32)}
    template = {"params": {"fc": {"kernel": (3, 2), "bias": (2,)}}}
    conversion = sd.torch_to_flax(state, identity, template=template)
    assert conversion.complete
    assert conversion.layers["fc"] == sd.LayerConversion("linear", "template", "fc", "plain")
    np.testing.assert_array_equal(conversion.variables["params"]["fc"]["kernel"], state["fc.weight"].T)


@pytest.mark.parametrize(
    ("kind", "shape", "rule"),
    [
        ("conv", (2, 3), "a conv weight has rank >= 3, got rank 2"),
        ("conv_transpose", (4,), "a conv_transpose weight has rank >= 3, got rank 1"),
        ("linear", (2, 3, 4), "a linear weight has rank 2, got rank 3"),
        ("embedding", (5,), "a embedding weight has rank 2, got rank 1"),
        ("batch_norm", (2, 2), "a batch_norm weight has rank 1, got rank 2"),
    ],
)
def test_weight_of_the_wrong_rank_for_its_kind_is_reported(kind, shape, rule):
    conversion = sd.torch_to_flax({"a.weight": arange(*shape)}, identity, kinds={"a": kind}, strict=False)
    assert conversion.unused["a.weight"] == (shape, f"layer 'a' ({kind}): {rule}")
    assert conversion.variables == {} and conversion.layers == {}
    with pytest.raises(ValueError, match=r"torch_to_flax is incomplete \(strict=True"):
        sd.torch_to_flax({"a.weight": arange(*shape)}, identity, kinds={"a": kind})


def test_template_decides_batch_norm_and_norm_for_a_lone_bias():
    bias = np.array([1.0, -2.0], np.float32)
    batch_norm = {"params": {"n": {"bias": struct(2)}}, "batch_stats": {"n": {"mean": struct(2)}}}
    conversion = sd.torch_to_flax({"n.bias": bias}, identity, template=batch_norm, strict=False)
    assert conversion.layers["n"] == sd.LayerConversion("batch_norm", "template", "n", None)
    np.testing.assert_array_equal(conversion.variables["params"]["n"]["bias"], bias)
    assert conversion.missing == {"batch_stats/n/mean": ((2,), "no torch key converts to it")}
    norm = {"params": {"n": {"scale": struct(2), "bias": struct(2)}}}
    conversion = sd.torch_to_flax({"n.bias": bias}, identity, template=norm, strict=False)
    assert conversion.layers["n"] == sd.LayerConversion("norm", "template", "n", None)
    np.testing.assert_array_equal(conversion.variables["params"]["n"]["bias"], bias)
    assert list(conversion.missing) == ["params/n/scale"]


def test_template_kernel_without_a_torch_weight_is_undecidable():
    bias = np.zeros(3, np.float32)
    template = {"params": {"c": {"kernel": struct(3, 2, 3), "bias": struct(3)}}}
    conversion = sd.torch_to_flax({"c.bias": bias}, identity, template=template, strict=False)
    assert "cannot tell which kind of layer this is (weight None)" in conversion.unused["c.bias"][1]
    assert set(conversion.missing) == {"params/c/kernel", "params/c/bias"}
    only_bias = {"params": {"c": {"bias": struct(3)}}}
    conversion = sd.torch_to_flax({"c.weight": arange(3, 2, 3)}, identity, template=only_bias, strict=False)
    assert "cannot tell which kind" in conversion.unused["c.weight"][1]


def test_leaf_the_template_lacks_or_shapes_differently_is_reported():
    state = {"c.weight": arange(2, 3, 4), "c.bias": np.ones(3, np.float32)}
    no_bias = {"params": {"c": {"kernel": struct(2, 3, 4)}}}
    conversion = sd.torch_to_flax(state, identity, template=no_bias, strict=False)
    assert conversion.unused == {"c.bias": ((3,), "the template has no 'params/c/bias'")}
    np.testing.assert_array_equal(conversion.variables["params"]["c"]["kernel"], state["c.weight"])
    assert conversion.layers["c"].kind == "conv_transpose"
    wrong_bias = {"params": {"c": {"kernel": struct(2, 3, 4), "bias": struct(4)}}}
    conversion = sd.torch_to_flax(state, identity, template=wrong_bias, strict=False)
    assert conversion.unused == {
        "c.bias": ((3,), "converts to 'params/c/bias' of shape (3,), the template's is (4,)"),
    }
    assert conversion.missing == {"params/c/bias": ((4,), "no torch key converts to it")}


def test_nnx_layout_without_template_makes_digit_parts_int_keys():
    state = {"layers.0.weight": arange(2, 3, 4), "layers.0.bias": np.ones(3, np.float32)}
    conversion = sd.torch_to_flax(state, lambda n: n.replace(".", "/"), kinds={"layers.0": "conv"}, layout="nnx")
    assert set(conversion.variables) == {"layers"} and set(conversion.variables["layers"]) == {0}
    np.testing.assert_array_equal(
        conversion.variables["layers"][0]["kernel"], np.transpose(state["layers.0.weight"], (2, 1, 0))
    )
    np.testing.assert_array_equal(conversion.variables["layers"][0]["bias"], state["layers.0.bias"])


def test_bias_only_layer_and_batch_norm_with_one_statistic():
    bias = np.array([3.0, 4.0], np.float32)
    conversion = sd.torch_to_flax({"b.bias": bias}, identity, kinds={"b": "group_norm"})
    assert conversion.layers["b"] == sd.LayerConversion("group_norm", "kinds", "b", None)
    assert set(conversion.variables["params"]["b"]) == {"bias"}
    np.testing.assert_array_equal(conversion.variables["params"]["b"]["bias"], bias)
    mean = np.array([0.5, -0.5], np.float32)
    conversion = sd.torch_to_flax({"n.weight": np.ones(2, np.float32), "n.running_mean": mean}, identity)
    assert conversion.layers["n"].decided_by == "running statistics"
    assert set(conversion.variables["batch_stats"]["n"]) == {"mean"}
    np.testing.assert_array_equal(conversion.variables["batch_stats"]["n"]["mean"], mean)


# --- Flax -> torch ----------------------------------------------------------------------------


def linear_variables() -> dict:
    return {"params": {"fc": {"kernel": arange(3, 2), "bias": np.array([1.0, 2.0], np.float32)}}}


def test_flax_to_torch_names_to_nothing_and_absent_layers_are_missing():
    template = {"fc.weight": (2, 3), "fc.bias": (2,)}
    conversion = sd.flax_to_torch(linear_variables(), lambda n: None, template=template, strict=False)
    assert conversion.missing == {
        "fc.weight": ((2, 3), "names maps layer 'fc' to nothing"),
        "fc.bias": ((2,), "names maps layer 'fc' to nothing"),
    }
    assert set(conversion.unused) == {"params/fc/kernel", "params/fc/bias"}
    conversion = sd.flax_to_torch(linear_variables(), lambda n: "elsewhere", template=template, strict=False)
    assert conversion.missing["fc.weight"] == ((2, 3), "variables have no layer at 'elsewhere'")
    with pytest.raises(ValueError, match=r"(?s)flax_to_torch is incomplete.*missing 'fc.bias' \(2,\)"):
        sd.flax_to_torch(linear_variables(), lambda n: "elsewhere", template=template)


def test_flax_to_torch_without_template_reports_the_layer_name():
    conversion = sd.flax_to_torch(linear_variables(), lambda n: None, kinds={"fc": "linear"}, strict=False)
    assert conversion.missing == {"fc": (None, "names maps layer 'fc' to nothing")}
    assert conversion.state_dict == {}


def test_flax_to_torch_template_with_a_broken_weight_form():
    template = {"fc.weight": (2, 3), "fc.weight_g": (2, 1), "fc.bias": (2,)}
    conversion = sd.flax_to_torch(linear_variables(), identity, template=template, strict=False)
    assert set(conversion.missing) == set(template)
    assert "no supported weight form" in conversion.missing["fc.weight"][1]
    assert conversion.missing["fc.weight"][1].startswith("layer 'fc': weight keys ['weight', 'weight_g']")


def test_flax_to_torch_undecidable_layers():
    only_bias = {"params": {"b": {"bias": np.ones(2, np.float32)}}}
    conversion = sd.flax_to_torch(only_bias, identity, template={"b.bias": (2,)}, strict=False)
    assert conversion.missing == {"b.bias": ((2,), "layer 'b': Flax leaves ['bias'] are no supported layer")}
    not_an_array = {"params": {"c": {"kernel": 1.5}}}
    conversion = sd.flax_to_torch(not_an_array, identity, template={"c.weight": (2, 3, 4)}, strict=False)
    assert conversion.missing == {"c.weight": ((2, 3, 4), "layer 'c': the Flax kernel is no array")}
    kernel = {"params": {"c": {"kernel": arange(4, 3, 2), "bias": np.ones(2, np.float32)}}}
    conversion = sd.flax_to_torch(kernel, identity, template={"c.bias": (2,)}, strict=False)
    assert conversion.missing["c.bias"][1] == (
        "layer 'c': cannot tell a conv from a conv_transpose (kernel (4, 3, 2)): pass kinds={'c': ...}"
    )
    square = {"params": {"c": {"kernel": arange(3, 3, 3, 3)}}}
    conversion = sd.flax_to_torch(square, identity, template={"c.weight": (3, 3, 3, 3)}, strict=False)
    assert "both as a conv and as a conv_transpose: pass kinds={'c': ...}" in conversion.missing["c.weight"][1]
    conversion = sd.flax_to_torch(kernel, identity, template={"c.weight": (5, 5, 5)}, strict=False)
    assert conversion.missing["c.weight"][1] == (
        "layer 'c': kernel (4, 3, 2) fits the template's weight (5, 5, 5) neither as a conv nor as a conv_transpose"
    )


def test_flax_to_torch_square_kernel_with_kinds_and_template():
    kernel = arange(3, 3, 3, 3)
    conversion = sd.flax_to_torch(
        {"params": {"c": {"kernel": kernel}}}, identity, template={"c.weight": (3, 3, 3, 3)}, kinds={"c": "conv"}
    )
    np.testing.assert_array_equal(conversion.state_dict["c.weight"], np.transpose(kernel, (3, 2, 0, 1)))


def test_flax_to_torch_leaves_and_keys_that_do_not_meet():
    # the template has no bias key: the Flax bias is unused
    conversion = sd.flax_to_torch(linear_variables(), identity, template={"fc.weight": (2, 3)}, strict=False)
    np.testing.assert_array_equal(conversion.state_dict["fc.weight"], arange(3, 2).T)
    assert conversion.unused == {"params/fc/bias": ((2,), "no torch key takes it")} and conversion.missing == {}
    # the template's bias has another shape
    conversion = sd.flax_to_torch(
        linear_variables(), identity, template={"fc.weight": (2, 3), "fc.bias": (3,)}, strict=False
    )
    assert conversion.missing == {"fc.bias": ((3,), "'params/fc/bias' converts to shape (2,)")}
    assert "fc.bias" not in conversion.state_dict
    # the Flax layer has no bias: the template's bias key is missing
    no_bias = {"params": {"fc": {"kernel": arange(3, 2)}}}
    conversion = sd.flax_to_torch(no_bias, identity, template={"fc.weight": (2, 3), "fc.bias": (2,)}, strict=False)
    assert conversion.missing == {"fc.bias": ((2,), "no Flax leaf converts to it")}


def test_flax_to_torch_batch_count_needs_a_template_value():
    variables = {
        "params": {"bn": {"scale": np.ones(2, np.float32), "bias": np.zeros(2, np.float32)}},
        "batch_stats": {"bn": {"mean": np.zeros(2, np.float32), "var": np.ones(2, np.float32)}},
    }
    shapes = {"bn.weight": (2,), "bn.bias": (2,), "bn.running_mean": (2,), "bn.running_var": (2,)}
    conversion = sd.flax_to_torch(variables, identity, template={**shapes, "bn.num_batches_tracked": ()}, strict=False)
    assert conversion.missing == {
        "bn.num_batches_tracked": (
            (),
            "Flax keeps no batch count: copied from the template, which gives no value for it",
        )
    }
    count = np.array(7, np.int64)
    conversion = sd.flax_to_torch(variables, identity, template={**shapes, "bn.num_batches_tracked": count})
    assert conversion.state_dict["bn.num_batches_tracked"] == 7
    # a norm layer (not batch_norm) has no batch count to write
    norm = {"params": {"bn": variables["params"]["bn"]}}
    template = {"bn.weight": (2,), "bn.bias": (2,), "bn.num_batches_tracked": count}
    conversion = sd.flax_to_torch(norm, identity, template=template, strict=False)
    assert conversion.layers["bn"].kind == "norm"
    assert list(conversion.missing) == ["bn.num_batches_tracked"]


def test_flax_to_torch_skips_leaves_and_kernels_that_do_not_fit_the_kind():
    variables = {"params": {"fc": {**linear_variables()["params"]["fc"], "scale": np.ones(2, np.float32)}}}
    conversion = sd.flax_to_torch(variables, identity, kinds={"fc": "linear"}, strict=False)
    assert set(conversion.state_dict) == {"fc.weight", "fc.bias"}
    assert conversion.unused == {"params/fc/scale": ((2,), "no torch key takes it")}
    conversion = sd.flax_to_torch(linear_variables(), identity, kinds={"fc": "conv"}, strict=False)
    assert set(conversion.state_dict) == {"fc.bias"}
    assert conversion.unused == {"params/fc/kernel": ((3, 2), "no torch key takes it")}
