"""Static TF-"same" padding: the exported graph holds no shape arithmetic for onnx2tf to misread."""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from timm.layers import Conv2dSame  # noqa: E402
from timm.layers.padding import pad_same_arg  # noqa: E402

from compress.export import DeployableNet, export_onnx, onnx_outputs, torch_outputs  # noqa: E402
from compress.static_padding import (  # noqa: E402
    StaticSameConv2d,
    fold_pads_into_convs,
    make_padding_static,
    same_pads,
)
from train.models import create_model  # noqa: E402


@pytest.mark.parametrize("size", [(7, 7), (8, 9), (80, 80), (159, 160), (1, 3)])
@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (5, 2, 1), (3, 1, 1), (3, 2, 2)])
def test_same_pads_match_timm(size, kernel, stride, dilation):
    assert list(same_pads(size, (kernel,) * 2, (stride,) * 2, (dilation,) * 2)) == pad_same_arg(
        list(size), [kernel] * 2, [stride] * 2, [dilation] * 2
    )


def _lite0(seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model("tf_efficientnet_lite0", pretrained=None).eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def test_static_padding_keeps_the_outputs_and_leaves_no_dynamic_conv():
    model = _lite0()
    dynamic = sum(isinstance(m, Conv2dSame) for m in model.modules())
    assert dynamic == 5  # the stem and the four strided depthwise convolutions
    images = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        before = model(images)
        assert make_padding_static(model, 96) == dynamic
        after = model(images)
    assert not any(isinstance(m, Conv2dSame) for m in model.modules())
    assert sum(isinstance(m, StaticSameConv2d) for m in model.modules()) == dynamic
    assert torch.equal(before, after)


def test_exported_graph_has_no_pad_or_shape_arithmetic(tmp_path):
    model = _lite0()
    path = export_onnx(DeployableNet(model), tmp_path / "lite0.onnx", 96)
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert not {"Pad", "Shape", "Ceil", "Gather", "ConstantOfShape"} & set(ops), ops
    # the model itself was not changed by the export
    assert sum(isinstance(m, Conv2dSame) for m in model.modules()) == 5
    images = np.random.default_rng(0).normal(size=(3, 96, 96, 1)).astype(np.float32)
    reference, exported = torch_outputs(model, images), onnx_outputs(path, images)
    for name, values in reference.items():
        np.testing.assert_allclose(exported[name], values, atol=2e-5, rtol=1e-5)


def _pad_conv_model(path, pads, value=0.0, second_reader=False):
    weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(np.array(pads))),
        helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.float32(value))),
        helper.make_node("Pad", ["x", "pads", "v"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nchw"))]
    if second_reader:
        nodes.append(helper.make_node("Relu", ["padded"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, list("nchw")))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        outputs,
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _run(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_zero_pad_is_folded_into_the_conv_with_the_same_result(tmp_path):
    path = _pad_conv_model(tmp_path / "m.onnx", [0, 0, 0, 1, 0, 0, 1, 2])
    x = np.random.default_rng(0).normal(size=(1, 1, 8, 8)).astype(np.float32)
    before = _run(path, x)[0]
    assert fold_pads_into_convs(path) == 1
    graph = onnx.load(str(path)).graph
    assert [node.op_type for node in graph.node] == ["Conv"]
    pads = [helper.get_attribute_value(a) for a in graph.node[0].attribute if a.name == "pads"]
    assert pads == [[0, 1, 1, 2]]  # (top, left, bottom, right)
    np.testing.assert_allclose(_run(path, x)[0], before, atol=1e-6)


@pytest.mark.parametrize(
    "pads,value,second_reader",
    [
        ([0, 0, 0, 1, 0, 0, 1, 2], 1.0, False),  # not a zero pad
        ([0, 1, 0, 0, 0, 0, 0, 0], 0.0, False),  # pads a channel
        ([0, 0, 0, 1, 0, 0, 1, 2], 0.0, True),  # someone else reads the padded tensor
    ],
)
def test_pads_that_are_not_a_convs_zero_border_stay(tmp_path, pads, value, second_reader):
    path = _pad_conv_model(tmp_path / "m.onnx", pads, value, second_reader)
    assert fold_pads_into_convs(path) == 0
    assert "Pad" in [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.slow
def test_static_graph_converts_without_onnxsim(tmp_path):
    """The graph converts with onnx2tf's simplifier off (as export always runs it)."""
    if importlib.util.find_spec("onnx2tf") is None:
        pytest.skip("onnx2tf is not installed (the compress extra)")
    pytest.importorskip("ai_edge_litert")
    from compress.export import convert_tflite
    from edge_app.tflite import TFLiteModel

    model = _lite0()
    deployable = DeployableNet(model)
    path = export_onnx(deployable, tmp_path / "lite0.onnx", 96)
    files = convert_tflite(path, tmp_path / "tflite")
    images = np.random.default_rng(1).normal(size=(3, 96, 96, 1)).astype(np.float32)
    shapes = deployable.output_shapes(96)["outputs"]
    converted = TFLiteModel(files["float32"], outputs=shapes).run_many(images)
    reference = torch_outputs(model, images)
    np.testing.assert_allclose(converted["fracture_logit"], reference["fracture_logit"], atol=1e-4)
    np.testing.assert_allclose(converted["cam"], reference["cam"], atol=1e-3)
