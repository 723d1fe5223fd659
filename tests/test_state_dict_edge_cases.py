"""jtconv.state_dict: the report branches the whole-model tests do not reach.

Each test builds a tiny state dict (NumPy arrays, no torch model) that takes
one path of :func:`jtconv.state_dict.torch_to_flax` or
:func:`jtconv.state_dict.flax_to_torch` and checks the converted values
exactly, or the reason the report gives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtconv import state_dict as sd


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
