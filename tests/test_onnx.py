"""jtconv.onnx: ONNX ConvTranspose attributes run through jtconv.conv_transpose give ONNX's
outputs: those of the onnx package's own node test cases and of onnxruntime."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

import jtconv
from jtconv.onnx import conv_transpose_arguments
from jtconv.testing import relative_tolerance

import tiers

SWEEP_SIZE = 240


def _attributes(node) -> dict:
    from onnx import helper

    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _run_jtconv(node, inputs: list[np.ndarray]) -> np.ndarray:
    x, w, *bias = inputs
    arguments = conv_transpose_arguments(_attributes(node), x.shape, w.shape)
    return np.asarray(jtconv.conv_transpose(x, w, *bias, **arguments))


def _assert_close(actual: np.ndarray, expected: np.ndarray, message: str) -> None:
    assert actual.shape == expected.shape, f"{message}: shape {actual.shape}, expected {expected.shape}"
    tolerance = relative_tolerance("float32")
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, err_msg=message)


def test_onnx_node_test_cases():
    pytest.importorskip("onnx")
    from onnx.backend.test.case.node import convtranspose

    cases = []

    def record(node, inputs, outputs, name, **_):
        cases.append((node, inputs, outputs, name))

    with mock.patch.object(convtranspose, "expect", record):
        for method in dir(convtranspose.ConvTranspose):
            if method.startswith("export"):
                getattr(convtranspose.ConvTranspose, method)()
    names = {name for *_, name in cases}
    assert {"test_convtranspose_autopad_same", "test_convtranspose_output_shape", "test_convtranspose_pads"} <= names
    for node, inputs, (expected,), name in cases:
        _assert_close(_run_jtconv(node, inputs), expected, name)


def _random_node(index: int):
    """One seeded ConvTranspose node (every auto_pad, pads, output_padding, output_shape,
    strides, dilations, group, kernel_shape) and its float32 inputs."""
    from onnx import helper

    rng = np.random.default_rng([28, index])
    ndim = int(rng.integers(1, 4))
    group = int(rng.integers(1, 3))
    channels = group * int(rng.integers(1, 3))
    inputs = rng.integers(1, 6 if ndim < 3 else 4, ndim)
    kernel = rng.integers(1, 5 if ndim < 3 else 4, ndim)
    strides = rng.integers(1, 4, ndim)
    dilations = rng.integers(1, 4, ndim)
    full = strides * (inputs - 1) + dilations * (kernel - 1) + 1
    mode = rng.choice(["pads", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "output_shape"])
    attributes: dict = {"strides": strides.tolist(), "group": group}
    if rng.random() < 0.5 or dilations.max() > 1:
        attributes["dilations"] = dilations.tolist()
    if rng.random() < 0.3:
        attributes["kernel_shape"] = kernel.tolist()
    # onnxruntime rejects output_padding >= stride (jtconv and torch accept up to max(stride, dilation) - 1).
    output_padding = rng.integers(0, strides) if rng.random() < 0.5 else np.zeros(ndim, int)
    if output_padding.any():
        attributes["output_padding"] = output_padding.tolist()
    if mode == "pads":
        room = full + output_padding - 1
        begin = rng.integers(0, np.minimum(room // 2, 3) + 1)
        attributes["pads"] = begin.tolist() + rng.integers(0, np.minimum(room - begin, 3) + 1).tolist()
    elif mode == "output_shape":
        largest = strides * inputs + dilations * (kernel - 1)
        attributes["output_shape"] = rng.integers(np.maximum(full + output_padding - 3, 1), largest + 1).tolist()
        attributes["auto_pad"] = str(rng.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    else:
        attributes["auto_pad"] = str(mode)
    node_inputs = ["X", "W", "B"][: 2 + int(rng.random() < 0.5)]
    node = helper.make_node("ConvTranspose", node_inputs, ["Y"], **attributes)
    arrays = [
        rng.standard_normal((int(rng.integers(1, 3)), channels, *inputs.tolist())),
        rng.standard_normal((channels, int(rng.integers(1, 3)), *kernel.tolist())),
    ]
    if len(node_inputs) == 3:
        arrays.append(rng.standard_normal(group * arrays[1].shape[1]))
    return node, [a.astype(np.float32) for a in arrays]


def _run_onnxruntime(node, inputs: list[np.ndarray]) -> np.ndarray:
    from onnx import TensorProto, helper

    ort = pytest.importorskip("onnxruntime")
    graph = helper.make_graph(
        [node],
        "conv_transpose",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in zip(node.input, inputs)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnx's shape inference disagrees with the run for SAME_* with output_padding
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(node.input, inputs)))[0]


@pytest.mark.parametrize("chunk", tiers.chunks(SWEEP_SIZE, 120, quick=36), ids=str)
def test_random_nodes_match_onnxruntime(chunk):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    for index in chunk.indices():
        node, inputs = _random_node(index)
        message = f"configuration {index} ({_attributes(node)}, input {inputs[0].shape}, weight {inputs[1].shape})"
        _assert_close(_run_jtconv(node, inputs), _run_onnxruntime(node, inputs), f"{message}; {chunk.reproducer()}")


def test_attributes_map_onto_jtconv_arguments():
    arguments = conv_transpose_arguments(
        {"pads": [1, 2, 3, 4], "strides": [2, 3], "group": 2}, (1, 4, 5, 5), (4, 1, 3, 3)
    )
    assert arguments == {
        "stride": (2, 3),
        "padding": ((1, 3), (2, 4)),
        "output_padding": (0, 0),
        "dilation": (1, 1),
        "groups": 2,
    }
    assert conv_transpose_arguments({"auto_pad": b"VALID", "strides": [2]}, (1, 1, 4), (1, 1, 1))["padding"] == (
        (0, 0),
    )


@pytest.mark.parametrize(
    "auto_pad, padding", [("SAME_UPPER", ((1, 2),)), ("SAME_LOWER", ((2, 1),)), ("NOTSET", ((2, 1),))]
)
def test_output_shape_splits_the_total_padding(auto_pad, padding):
    # F + op = 2·2 + 3 + 1 = 8, total = 8 − 5 = 3; output_shape overrides pads.
    attributes = {"auto_pad": auto_pad, "strides": [2], "output_padding": [1], "output_shape": [5]}
    if auto_pad == "NOTSET":
        attributes["pads"] = [0, 0]
    arguments = conv_transpose_arguments(attributes, (1, 1, 3), (1, 1, 3))
    assert arguments["padding"] == padding and arguments["output_padding"] == (1,)
    assert jtconv.output_size(3, 3, 2, arguments["padding"], arguments["output_padding"]) == 5


def test_same_with_a_kernel_shorter_than_the_stride_crops_nothing():
    """As onnxruntime: 7 positions, not i·s = 8 (jtconv's "same")."""
    arguments = conv_transpose_arguments({"auto_pad": "SAME_UPPER", "strides": [2]}, (1, 1, 4), (1, 1, 1))
    assert arguments["padding"] == ((0, 0),) and arguments["output_padding"] == (0,)
    assert jtconv.conv_transpose(np.ones((1, 1, 4)), np.ones((1, 1, 1)), **arguments).shape == (1, 1, 7)


def test_output_shape_beyond_the_padding_free_output_extends_the_end():
    arguments = conv_transpose_arguments({"strides": [2], "output_shape": [8]}, (1, 1, 3), (1, 1, 3))
    assert arguments["padding"] == ((0, 0),) and arguments["output_padding"] == (1,)


@pytest.mark.parametrize(
    "attributes, x_shape, w_shape, named",
    [
        ({"stride": [2]}, (1, 1, 3), (1, 1, 3), "'stride'"),
        ({"strides": [2, 2]}, (1, 1, 3), (1, 1, 3), "strides"),
        ({"strides": [0]}, (1, 1, 3), (1, 1, 3), "strides"),
        ({"strides": "2"}, (1, 1, 3), (1, 1, 3), "strides"),
        ({"dilations": [0]}, (1, 1, 3), (1, 1, 3), "dilations"),
        ({"pads": [1]}, (1, 1, 3), (1, 1, 3), "pads"),
        ({"pads": [-1, 0]}, (1, 1, 3), (1, 1, 3), "pads"),
        ({"pads": [1, 1], "auto_pad": "SAME_UPPER"}, (1, 1, 3), (1, 1, 3), "pads"),
        ({"auto_pad": "SAME"}, (1, 1, 3), (1, 1, 3), "auto_pad"),
        ({"group": 0}, (1, 1, 3), (1, 1, 3), "group"),
        ({"group": 1.0}, (1, 1, 3), (1, 1, 3), "group"),
        ({"kernel_shape": [2]}, (1, 1, 3), (1, 1, 3), "kernel_shape"),
        ({"output_padding": [2], "strides": [2]}, (1, 1, 3), (1, 1, 3), "output_padding"),
        ({"output_padding": [-1]}, (1, 1, 3), (1, 1, 3), "output_padding"),
        ({"output_shape": [8, 8]}, (1, 1, 3), (1, 1, 3), "output_shape"),
        ({"output_shape": [9], "strides": [2]}, (1, 1, 3), (1, 1, 3), "output_shape"),
        ({}, (1, 3), (1, 1, 3), "x_shape"),
    ],
)
def test_bad_attributes_are_named(attributes, x_shape, w_shape, named):
    with pytest.raises(ValueError, match=named):
        conv_transpose_arguments(attributes, x_shape, w_shape)


def test_onnxruntime_rejects_the_output_shape_jtconv_rejects():
    """s·i + d·(k − 1) = 2·3 + 2 = 8 is the largest output_shape either accepts."""
    pytest.importorskip("onnx")
    from onnx import helper

    inputs = [np.ones((1, 1, 3), np.float32), np.ones((1, 1, 3), np.float32)]
    largest = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[2], output_shape=[8])
    _assert_close(_run_jtconv(largest, inputs), _run_onnxruntime(largest, inputs), "output_shape 8")
    beyond = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[2], output_shape=[9])
    with pytest.raises(Exception, match="output_shape"):
        _run_onnxruntime(beyond, inputs)
    with pytest.raises(ValueError, match="output_shape"):
        _run_jtconv(beyond, inputs)
