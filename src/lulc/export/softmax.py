"""A softmax over the class axis, written out as elementwise ops in the exported ONNX graph.

tf2onnx leaves a Keras segmentation model's softmax inside the graph's channels-first part,
over axis 1 of (N, K, H, W). onnxruntime's CPU Softmax only runs along the last axis: for any
other it transposes the tensor there and back. On the sample U-Net (4 tiles of 256² x 13,
one thread, onnxruntime 1.32) that took 25 ms of the model's 218 (int8: 25 of 175); written
out as ReduceMax, Sub, Exp, ReduceSum and Div along axis 1 it takes 2.5 ms, with the same
probabilities to 2.4e-7. A softmax along the last axis stays as it is: there the fused op is
the faster (4 vs 7 ms on 4 x 256² x 8).

The rewrite is made as each Keras model is converted (:func:`lulc.export.onnx.convert`): the
artefacts made from ``model.onnx`` (the channels-first twin, int8, fp16, the page's model) and
the graphs QAT, scene strides and TensorRT convert for themselves all compute the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: onnx opsets before 13 define Softmax over the flattened axes from ``axis`` on, not one axis
FIRST_OPSET = 13
#: ReduceMax takes its axes as an input (not an attribute) from this opset on, as ReduceSum from 13
REDUCE_MAX_AXES_INPUT = 18


def expand_softmax(path: Path) -> int:
    """Rewrite, in place, each Softmax of the ONNX model at ``path`` whose axis is not the last
    of its (shape-inferred) input; returns how many were rewritten (0: the file is untouched)."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < FIRST_OPSET:
        return 0
    inferred = shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.value_info, *inferred.input, *inferred.output)
             if v.type.tensor_type.HasField("shape")}
    graph = model.graph
    taken = {name for n in graph.node for name in (*n.input, *n.output, n.name)} | {i.name for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        rank = ranks.get(node.input[0]) if node.op_type == "Softmax" and node.domain in ("", "ai.onnx") else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        prefix = f"lulc_softmax{rewritten}"
        if not rank or axis % rank == rank - 1 or any(name.startswith(prefix) for name in taken):
            nodes.append(node)
            continue
        x, y, axes = node.input[0], node.output[0], f"{prefix}_axes"
        peak, shifted, exp, total = (f"{prefix}_{part}" for part in ("max", "shifted", "exp", "sum"))
        graph.initializer.append(numpy_helper.from_array(np.array([axis % rank], np.int64), axes))
        if opset >= REDUCE_MAX_AXES_INPUT:
            reduce_max = helper.make_node("ReduceMax", [x, axes], [peak], f"{prefix}_ReduceMax", keepdims=1)
        else:
            reduce_max = helper.make_node("ReduceMax", [x], [peak], f"{prefix}_ReduceMax", axes=[axis % rank], keepdims=1)
        nodes += [reduce_max,  # exp of x - max never overflows
                  helper.make_node("Sub", [x, peak], [shifted], f"{prefix}_Sub"),
                  helper.make_node("Exp", [shifted], [exp], f"{prefix}_Exp"),
                  helper.make_node("ReduceSum", [exp, axes], [total], f"{prefix}_ReduceSum", keepdims=1),
                  helper.make_node("Div", [exp, total], [y], f"{prefix}_Div")]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return rewritten
