"""Single-op and QDQ-subgraph ONNX models built from an :class:`~qverify.backends.base.OpCase`.

Used by the onnxruntime, openvino and tensorrt adapters. Two forms of every model:

* ``params="constant"`` (the deployed form): everything but the activation inputs (weights, scales,
  zero points, bias) is an initializer. One model per parameter set.
* ``params="input"``: every OpCase input is a graph input, so one cached session serves every scale
  and zero point. A runtime may compile the two forms differently; an adapter uses this form only
  for ops where a test proves that it computes exactly what the constant form computes.

Dimensions of graph inputs are symbolic, so one model serves every shape of the same rank.

OpCase conventions (``case.inputs`` in ONNX order; ``None`` for an omitted optional input):

============================  ===================================================================
op                            inputs / attrs
============================  ===================================================================
QuantizeLinear                x, y_scale, y_zero_point; attrs ``axis`` (default 1)
DequantizeLinear              x, x_scale, x_zero_point; attrs ``axis`` (default 1)
DynamicQuantizeLinear         x  (outputs y, y_scale, y_zero_point)
MatMulInteger                 A, B, a_zero_point, b_zero_point
ConvInteger                   x, w, x_zero_point, w_zero_point; conv attrs
QLinearMatMul                 a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
QLinearConv                   x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [B int32]; conv
qdq_conv                      as QLinearConv; the graph is DQ(x), DQ(w), [DQ(B)] -> Conv -> post -> Q
qdq_matmul                    as QLinearMatMul; DQ(a), DQ(b) -> MatMul -> post -> Q
qdq_gemm                      as QLinearConv without conv attrs (x 2-D [M,K], w [N,K], transB=1)
============================  ===================================================================

Conv attrs: ``strides``, ``pads`` (ONNX order, begin then end), ``dilations``, ``group``.
QDQ subgraphs take ``post``: a tuple of ``"relu"``, ``"maxpool"``, ``"avgpool"`` (2x2, stride 2,
between a Q/DQ pair with the output's scale and zero point), ``"add"`` (a second quantized operand
``r`` as one more input after the bias slot: ``r, r_scale, r_zp``; the sum is quantized with the
output parameters). The output is always the integer codes of the final QuantizeLinear.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qverify.errors import InputError

from .base import OpCase

OPSET = 21  # QuantizeLinear/DequantizeLinear with block_size; MLAS and OpenVINO both read it
IR_VERSION = 10  # the IR version of opset 21; every runtime in scope loads it

ParamsForm = Literal["constant", "input"]

# Which OpCase input positions are activations (always graph inputs). The rest are parameters.
_ACTIVATIONS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (0,),
    "DequantizeLinear": (0,),
    "DynamicQuantizeLinear": (0,),
    "MatMulInteger": (0,),
    "ConvInteger": (0,),
    "QLinearMatMul": (0,),
    "QLinearConv": (0,),
    "qdq_conv": (0,),
    "qdq_matmul": (0,),
    "qdq_gemm": (0,),
}
_ONNX_INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "QuantizeLinear": ("x", "y_scale", "y_zero_point"),
    "DequantizeLinear": ("x", "x_scale", "x_zero_point"),
    "DynamicQuantizeLinear": ("x",),
    "MatMulInteger": ("A", "B", "a_zero_point", "b_zero_point"),
    "ConvInteger": ("x", "w", "x_zero_point", "w_zero_point"),
    "QLinearMatMul": ("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"),
    "QLinearConv": ("x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B"),
}
_ONNX_INPUT_NAMES["qdq_conv"] = _ONNX_INPUT_NAMES["QLinearConv"] + ("r", "r_scale", "r_zero_point")
_ONNX_INPUT_NAMES["qdq_gemm"] = _ONNX_INPUT_NAMES["QLinearConv"] + ("r", "r_scale", "r_zero_point")
_ONNX_INPUT_NAMES["qdq_matmul"] = _ONNX_INPUT_NAMES["QLinearMatMul"] + ("B", "r", "r_scale", "r_zero_point")

_CONV_ATTRS = ("strides", "pads", "dilations", "group")
POST_OPS = ("relu", "maxpool", "avgpool", "add")


def ops() -> tuple[str, ...]:
    """The op names :func:`build` understands."""
    return tuple(_ONNX_INPUT_NAMES)


@dataclass(frozen=True)
class BuiltModel:
    """An ONNX model for one OpCase signature, and how to feed an OpCase to it."""

    model: onnx.ModelProto
    feed_positions: tuple[int, ...]  # OpCase input positions fed as graph inputs, in graph order
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    params: ParamsForm

    def feeds(self, case: OpCase) -> dict[str, np.ndarray]:
        """The feed dict for ``case`` (whose signature must be the one this model was built for)."""
        return {n: np.asarray(case.inputs[p], order="C") for n, p in zip(self.input_names, self.feed_positions)}

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


def _np_to_onnx(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _conv_attrs(case: OpCase, spatial: int) -> dict[str, Any]:
    a = case.attrs
    return {
        "strides": list(a.get("strides", [1] * spatial)),
        "pads": list(a.get("pads", [0] * (2 * spatial))),
        "dilations": list(a.get("dilations", [1] * spatial)),
        "group": int(a.get("group", 1)),
    }


def signature(case: OpCase, params: ParamsForm = "constant", *, static: bool = False) -> Hashable:
    """Cache key of the model :func:`build` makes for ``case``: op, attrs, input ranks and dtypes
    (shapes when ``static``), and (constant form only) a digest of the parameter values."""
    if case.op not in _ONNX_INPUT_NAMES:
        raise InputError(f"no ONNX graph builder for op {case.op!r}", f"choose from: {', '.join(ops())}")
    acts = _ACTIVATIONS[case.op]
    parts: list[Hashable] = [case.op, params, _freeze(case.attrs), static]
    digest = hashlib.blake2b(digest_size=16)
    for i, arr in enumerate(case.inputs):
        if arr is None:
            parts.append(None)
            continue
        a = np.asarray(arr)
        if i in acts or params == "input":
            parts.append((a.shape if static else a.ndim, a.dtype.str))
        else:
            parts.append((a.shape, a.dtype.str))
            digest.update(np.asarray(a, order="C").tobytes())
    if params == "constant":
        parts.append(digest.hexdigest())
    return tuple(parts)


def _freeze(v: Any) -> Hashable:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    return v


class _Graph:
    """Accumulates nodes, inputs and initializers."""

    def __init__(self, case: OpCase, params: ParamsForm, static: bool = False):
        self.case = case
        self.params = params
        self.static = static
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.feed_positions: list[int] = []
        self.input_names: list[str] = []
        self._n = 0

    def value(self, pos: int) -> str:
        """Graph name of OpCase input ``pos`` (an input or an initializer); '' when absent."""
        arr = self.case.inputs[pos] if pos < len(self.case.inputs) else None
        if arr is None:
            return ""
        arr = np.asarray(arr)
        name = _ONNX_INPUT_NAMES[self.case.op][pos]
        if pos in _ACTIVATIONS[self.case.op] or self.params == "input":
            dims = list(arr.shape) if self.static else [f"{name}_d{i}" for i in range(arr.ndim)]
            self.inputs.append(helper.make_tensor_value_info(name, _np_to_onnx(arr.dtype), dims))
            self.feed_positions.append(pos)
            self.input_names.append(name)
        else:
            self.inits.append(numpy_helper.from_array(np.asarray(arr, order="C"), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs: Any) -> list[str]:
        outs = [f"{op_type.lower()}_{self._n}_{i}" for i in range(n_out)]
        self._n += 1
        # trailing absent optional inputs are dropped; inner ones stay as ''
        ins = list(inputs)
        while ins and ins[-1] == "":
            ins.pop()
        self.nodes.append(helper.make_node(op_type, ins, outs, domain=domain or None, **attrs))
        return outs

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr, order="C"), name))
        return name

    def finish(self, outputs: Sequence[tuple[str, int]], ranks: Sequence[int] | None = None) -> BuiltModel:
        if ranks is None:
            ranks = [_out_rank(self.case)] * len(outputs)
        out_vi = [
            helper.make_tensor_value_info(n, t, [f"{n}_d{i}" for i in range(r)])
            for (n, t), r in zip(outputs, ranks)
        ]
        graph = helper.make_graph(self.nodes, f"qverify_{self.case.op}", self.inputs, out_vi, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qverify")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return BuiltModel(
            model=model,
            feed_positions=tuple(self.feed_positions),
            input_names=tuple(self.input_names),
            output_names=tuple(n for n, _ in outputs),
            params=self.params,
        )


def _out_rank(case: OpCase) -> int:
    ranks = [np.asarray(case.inputs[0]).ndim]
    if case.op in ("MatMulInteger",):
        ranks.append(np.asarray(case.inputs[1]).ndim)
    elif case.op in ("QLinearMatMul", "qdq_matmul"):
        ranks.append(np.asarray(case.inputs[3]).ndim)
    return max(ranks)


def _dtype_of(case: OpCase, pos: int) -> np.dtype:
    a = case.inputs[pos]
    if a is None:
        raise InputError(f"{case.op}: input {_ONNX_INPUT_NAMES[case.op][pos]!r} is required", "pass an array")
    return np.asarray(a).dtype


def build(case: OpCase, params: ParamsForm = "constant", *, static: bool = False) -> BuiltModel:
    """An ONNX model (opset 21) computing ``case.op`` on ``case.inputs``; see the module docstring.

    ``params`` (default ``"constant"``, the deployed form) says whether non-activation inputs are
    initializers or graph inputs. ``static`` (default False) gives graph inputs the case's shapes
    instead of symbolic dimensions (some parsers, e.g. TensorRT's for grouped conv, need them).
    """
    if params not in ("constant", "input"):
        raise InputError(f"params={params!r} is not a parameter form", "use 'constant' or 'input'")
    signature(case, params)  # validates the op name
    g = _Graph(case, params, static)
    op = case.op
    if op in ("QuantizeLinear", "DequantizeLinear"):
        names = [g.value(i) for i in range(3)]
        axis = int(case.attrs.get("axis", 1))
        kw: dict[str, Any] = {"axis": axis}
        if case.attrs.get("block_size"):
            kw["block_size"] = int(case.attrs["block_size"])
        (y,) = g.node(op, names, **kw)
        out_t = _np_to_onnx(_dtype_of(case, 2)) if op == "QuantizeLinear" else TensorProto.FLOAT
        return g.finish([(y, out_t)])
    if op == "DynamicQuantizeLinear":
        y, s, z = g.node(op, [g.value(0)], n_out=3)
        return g.finish(
            [(y, TensorProto.UINT8), (s, TensorProto.FLOAT), (z, TensorProto.UINT8)],
            ranks=[np.asarray(case.inputs[0]).ndim, 0, 0],
        )
    if op == "MatMulInteger":
        (y,) = g.node(op, [g.value(i) for i in range(4)])
        return g.finish([(y, TensorProto.INT32)])
    if op == "ConvInteger":
        spatial = np.asarray(case.inputs[0]).ndim - 2
        (y,) = g.node(op, [g.value(i) for i in range(4)], **_conv_attrs(case, spatial))
        return g.finish([(y, TensorProto.INT32)])
    if op == "QLinearMatMul":
        (y,) = g.node(op, [g.value(i) for i in range(8)])
        return g.finish([(y, _np_to_onnx(_dtype_of(case, 7)))])
    if op == "QLinearConv":
        spatial = np.asarray(case.inputs[0]).ndim - 2
        ins = [g.value(i) for i in range(min(9, len(case.inputs)))]
        (y,) = g.node(op, ins, **_conv_attrs(case, spatial))
        return g.finish([(y, _np_to_onnx(_dtype_of(case, 7)))])
    if op in ("qdq_conv", "qdq_gemm", "qdq_matmul"):
        return _build_qdq(g)
    raise AssertionError(op)  # unreachable: signature() validated the name


def _build_qdq(g: _Graph) -> BuiltModel:
    case, op = g.case, g.case.op
    post = tuple(case.attrs.get("post", ()))
    bad = [p for p in post if p not in POST_OPS]
    if bad:
        raise InputError(f"{op}: unknown post op(s) {bad}", f"choose from: {', '.join(POST_OPS)}")
    n = len(case.inputs)
    x, xs, xz = g.value(0), g.value(1), g.value(2)
    w, ws, wz = g.value(3), g.value(4), g.value(5)
    ys, yz = g.value(6), g.value(7)
    w_axis = int(case.attrs.get("w_axis", 0 if op in ("qdq_conv", "qdq_gemm") else 1))
    ws_arr = np.asarray(case.inputs[4])
    (xd,) = g.node("DequantizeLinear", [x, xs, xz])
    (wd,) = g.node("DequantizeLinear", [w, ws, wz], axis=w_axis)
    bias_pos = 8
    bd = ""
    if n > bias_pos and case.inputs[bias_pos] is not None:
        b = g.value(bias_pos)
        # bias scale = x_scale * w_scale, zero point 0 (int32): how QDQ exporters write it (a
        # constant); in the input form it is computed in the graph so that it follows the inputs
        if g.params == "constant":
            bscale = (np.float32(np.asarray(case.inputs[1])) * ws_arr.astype(np.float32)).astype(np.float32)
            bs = g.const("B_scale", bscale)
        else:
            (bs,) = g.node("Mul", [xs, ws])
        (bd,) = g.node("DequantizeLinear", [b, bs], axis=0)
    if op == "qdq_conv":
        spatial = np.asarray(case.inputs[0]).ndim - 2
        (y,) = g.node("Conv", [xd, wd, bd], **_conv_attrs(case, spatial))
    elif op == "qdq_gemm":
        (y,) = g.node("Gemm", [xd, wd, bd], transB=1)
    else:
        (y,) = g.node("MatMul", [xd, wd])
        if bd:
            (y,) = g.node("Add", [y, bd])
    for p in post:
        if p == "relu":
            (y,) = g.node("Relu", [y])
        elif p in ("maxpool", "avgpool"):
            (q,) = g.node("QuantizeLinear", [y, ys, yz])
            (d,) = g.node("DequantizeLinear", [q, ys, yz])
            (y,) = g.node("MaxPool" if p == "maxpool" else "AveragePool", [d], kernel_shape=[2, 2], strides=[2, 2])
        elif p == "add":
            (q,) = g.node("QuantizeLinear", [y, ys, yz])
            (d,) = g.node("DequantizeLinear", [q, ys, yz])
            r0 = bias_pos + 1
            r, rs, rz = g.value(r0), g.value(r0 + 1), g.value(r0 + 2)
            if not r:
                raise InputError(f"{op}: post op 'add' needs inputs r, r_scale, r_zero_point", "append them after B")
            (rd,) = g.node("DequantizeLinear", [r, rs, rz])
            (y,) = g.node("Add", [d, rd])
    (out,) = g.node("QuantizeLinear", [y, ys, yz])
    return g.finish([(out, _np_to_onnx(_dtype_of(case, 7)))])


class ModelCache:
    """A small thread-safe LRU of objects (models, sessions) keyed by :func:`signature` plus a
    variant key. ``maxsize`` (default 256) bounds the constant form, whose keys include parameters."""

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = factory()
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is cached (no hit/miss counted, the LRU order unchanged)."""
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)


_MODELS = ModelCache(maxsize=512)


def cached_build(case: OpCase, params: ParamsForm = "constant", *, static: bool = False) -> BuiltModel:
    """:func:`build`, cached per :func:`signature`."""
    return _MODELS.get(signature(case, params, static=static), lambda: build(case, params, static=static))


# ---------------------------------------------------------------------------------------------
# several cases in one model (batched compiles)


@dataclass(frozen=True)
class MergedModel:
    """Several :class:`BuiltModel` graphs side by side in one ONNX model, each an independent
    branch; ``input_names[i]`` / ``output_names[i]`` are branch ``i``'s (prefixed) names."""

    model: onnx.ModelProto
    input_names: tuple[tuple[str, ...], ...]
    output_names: tuple[tuple[str, ...], ...]

    def feeds(self, i: int, built: BuiltModel, case: OpCase) -> dict[str, np.ndarray]:
        """Branch ``i``'s feed dict for ``case`` (``built`` is that branch's unmerged model)."""
        return dict(zip(self.input_names[i], built.feeds(case).values()))

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


def merge(models: Sequence[BuiltModel], prefixes: Sequence[str] | None = None) -> MergedModel:
    """One ONNX model holding every model of ``models`` as an independent branch, in order.

    Every name of branch ``i`` (nodes, edges, graph inputs and outputs, initializers, value infos
    and symbolic dimensions) gets the prefix ``prefixes[i]`` (default ``f"b{i}_"``), via
    :func:`onnx.compose.add_prefix`; nodes, initializers, inputs and outputs are then concatenated.
    The opset and IR version are those of the branches (they must agree). No branch shares a tensor
    with another, so each computes what it computes alone, unless a runtime optimises across them.
    """
    from onnx import compose

    if not models:
        raise InputError("merge() got no models", "pass at least one BuiltModel")
    if prefixes is None:
        prefixes = [f"b{i}_" for i in range(len(models))]
    if len(prefixes) != len(models) or len(set(prefixes)) != len(prefixes):
        raise InputError(
            f"merge() needs one distinct prefix per model ({len(models)} models, {len(prefixes)} prefixes)",
            "pass distinct prefixes, one per model, or none",
        )
    first = models[0].model
    opsets = {(o.domain, o.version) for o in first.opset_import}
    nodes, inits, inputs, outputs = [], [], [], []
    in_names, out_names = [], []
    for built, prefix in zip(models, prefixes):
        if {(o.domain, o.version) for o in built.model.opset_import} != opsets:
            raise InputError("merge() got models with different opsets", "build every branch with the same opset")
        m = compose.add_prefix(built.model, prefix)
        g = m.graph
        for vi in list(g.input) + list(g.output):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.dim_param = prefix + d.dim_param
        nodes.extend(g.node)
        inits.extend(g.initializer)
        inputs.extend(g.input)
        outputs.extend(g.output)
        in_names.append(tuple(prefix + n for n in built.input_names))
        out_names.append(tuple(prefix + n for n in built.output_names))
    graph = helper.make_graph(nodes, f"qverify_merged_{len(models)}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="qverify")
    model.ir_version = first.ir_version
    return MergedModel(model, tuple(in_names), tuple(out_names))
