"""TF-"same" padding made static before export, so the converter never sees shape arithmetic.

timm's ``tf_*`` networks (EfficientNet-Lite among them) pad their strided convolutions the way
TensorFlow does: asymmetrically, by an amount computed *at run time* from the input's shape
(``timm.layers.Conv2dSame``). Exported as is, the ONNX graph holds ``Shape → Gather → Ceil → …
→ Pad`` chains. onnx2tf only converts that correctly when onnxsim folds the chains first; when
onnxsim is missing, fails, or changes, the pads land on the wrong axis (measured: onnx2tf 1.28.8
without onnxsim fails on the Lite0 student with "Dimensions must be equal, but are 97 and 96").

The export input size is fixed, so every pad is a constant. Two passes make that explicit:

1. :func:`make_padding_static` (torch): each ``Conv2dSame`` becomes a plain ``Conv2d`` behind a
   zero pad of the amounts it computes at the export size (the same tensors, exactly the same
   arithmetic);
2. :func:`fold_pads_into_convs` (ONNX): each constant zero ``Pad`` that feeds only a ``Conv``
   is folded into the Conv's own ``pads`` attribute, and the dead pad arithmetic is removed.

The graph that reaches the converter then holds Conv nodes with explicit (possibly asymmetric)
pads, and no ``Pad``, ``Shape`` or ``Ceil`` node at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app._optional import require

torch = require("torch", "export models")
nn = torch.nn
functional = torch.nn.functional


class StaticSameConv2d(nn.Module):
    """A convolution behind constant zero pads ``(left, right, top, bottom)``.

    It shares its weight and bias tensors with the module it replaces, so a state dict taken
    afterwards is the same as before apart from the ``conv.`` prefix.
    """

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=0,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        self.conv.weight = conv.weight
        if conv.bias is not None:
            self.conv.bias = conv.bias
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x):
        if any(self.pads):
            x = functional.pad(x, self.pads)
        return self.conv(x)


def same_pads(
    size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation=(1, 1)
) -> tuple[int, int, int, int]:
    """TensorFlow's "SAME" pads (left, right, top, bottom) for an input of ``size`` (h, w)."""
    totals = []
    for extent, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        totals.append(max((-(-extent // s) - 1) * s + (k - 1) * d + 1 - extent, 0))
    pad_h, pad_w = totals
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _dynamic_same_convs(net: nn.Module) -> list[str]:
    """Names of the convolutions that compute their padding from the input at run time."""
    timm_layers = require("timm.layers", "export models")
    dynamic = (timm_layers.Conv2dSame,)
    return [name for name, module in net.named_modules() if isinstance(module, dynamic)]


def make_padding_static(net: nn.Module, input_size: int, in_chans: int = 1) -> int:
    """Replace every run-time "same" convolution of ``net`` by a static one; returns how many.

    ``net`` is changed in place; its outputs at ``input_size`` do not change (same tensors, same
    pads). Call it on a copy when the original must keep accepting other sizes.
    """
    names = _dynamic_same_convs(net)
    if not names:
        return 0
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [
        net.get_submodule(name).register_forward_pre_hook(
            lambda _module, inputs, name=name: shapes.__setitem__(
                name, tuple(int(v) for v in inputs[0].shape[-2:])
            )
        )
        for name in names
    ]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        conv = getattr(parent, child)
        if name not in shapes:  # a branch the forward pass did not take
            continue
        pads = same_pads(shapes[name], conv.kernel_size, conv.stride, conv.dilation)
        setattr(parent, child, StaticSameConv2d(conv, pads))
    return len(shapes)


# ----------------------------------------------------------------------------- ONNX pass


def _constant_value(graph, name: str, producers: dict, opsets) -> np.ndarray | None:
    """The value of tensor ``name`` when it depends on constants only, else None."""
    onnx = require("onnx", "fold constant pads")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if name in initializers:
        return onnx.numpy_helper.to_array(initializers[name])
    graph_inputs = {value.name for value in graph.input}
    needed: list = []
    stack, seen = [name], set()
    while stack:
        tensor = stack.pop()
        if not tensor or tensor in seen or tensor in initializers:
            continue
        seen.add(tensor)
        if tensor in graph_inputs or tensor not in producers:
            return None
        node = producers[tensor]
        if all(node is not other for other in needed):
            needed.append(node)
        stack.extend(node.input)
    ordered = [node for node in graph.node if any(node is other for other in needed)]
    used = {tensor for node in ordered for tensor in node.input}
    subgraph = helper.make_graph(
        ordered,
        "constant",
        [],
        [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
        [tensor for tensor in graph.initializer if tensor.name in used],
    )
    model = helper.make_model(
        subgraph, opset_imports=[opset for opset in opsets if opset.domain in ("", "ai.onnx")]
    )
    return np.asarray(ReferenceEvaluator(model).run(None, {})[0])


def _attribute(node, name: str, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def fold_pads_into_convs(path: str | Path) -> int:
    """Fold constant zero ``Pad`` → ``Conv`` pairs of the ONNX file at ``path``; in place.

    Returns the number of pads folded. Pads on the batch or channel axes, non-zero pad values,
    other modes and pads read by more than one node are left alone. Nodes that no output needs
    any more (the pad arithmetic) are removed, and the model is checked before it is written.
    """
    onnx = require("onnx", "fold constant pads")
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    opsets = list(model.opset_import)
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    outputs = {value.name for value in graph.output}
    folded = 0
    for node in list(graph.node):
        if node.op_type != "Pad" or _attribute(node, "mode", b"constant") != b"constant":
            continue
        readers = consumers.get(node.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "Conv" or node.output[0] in outputs:
            continue
        if len(node.input) > 3 and node.input[3]:  # explicit axes (opset 18+): leave it
            continue
        pads = _constant_value(graph, node.input[1], producers, opsets)
        if pads is None or pads.size != 8:
            continue
        if len(node.input) > 2 and node.input[2]:
            value = _constant_value(graph, node.input[2], producers, opsets)
            if value is None or np.any(value != 0):
                continue
        pads = [int(v) for v in pads.reshape(-1)]
        # ONNX order: (n, c, h, w) begins, then (n, c, h, w) ends.
        if pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            continue
        conv = readers[0]
        if _attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        old = _attribute(conv, "pads", [0, 0, 0, 0])
        merged = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        for attribute in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attribute)
        conv.attribute.append(helper.make_attribute("pads", merged))
        conv.input[0] = node.input[0]
        folded += 1
    _remove_dead_nodes(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return folded


def _remove_dead_nodes(graph) -> int:
    live = {value.name for value in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(output in live for output in node.output):
            keep.append(node)
            live.update(node.input)
    dead = [node for node in graph.node if all(node is not kept for kept in keep)]
    for node in dead:
        graph.node.remove(node)
    unused = [tensor for tensor in graph.initializer if tensor.name not in live]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return len(dead)
