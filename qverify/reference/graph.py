"""Run a QDQ ONNX model in NumPy the way a runtime with a given profile computes it.

- QuantizeLinear / DequantizeLinear: :func:`qverify.reference.quantize.quantize` / ``dequantize``
  with the profile (the one home of the quantization math).
- Where ``KernelSemantics.fuse_qdq`` is true, ``DQ(x) -> Conv/MatMul/Gemm(DQ(w)[, DQ(b)]) [-> Relu/Clip]
  -> Q`` runs as one integer kernel (:func:`~qverify.reference.kernels.qlinear_conv` /
  ``qlinear_matmul``) with the profile's kernel semantics. A Relu/Clip between the op and Q is
  dropped only where Q's clamp makes it a no-op (Relu: Q's zero point is its qmin; Clip: the clip
  range contains Q's representable range), which is when runtimes drop it. int8 activations fuse
  only where ``KernelSemantics.fuse_int8_activations``, or where ``int8_qdq_to_uint8`` lets the
  runtime rewrite their Q -> DQ pair to uint8 first (same codes + 128: the values do not change).
- Where ``KernelSemantics.fuse_qdq_global_average_pool``, ``DQ -> GlobalAveragePool -> Q`` with one
  code type runs as :func:`~qverify.reference.kernels.qlinear_global_average_pool`.
- Where ``KernelSemantics.fuse_qdq_average_pool``, ``DQ -> AveragePool -> Q`` with one code type runs
  as one pool summed in float32 (see ``_fused_average_pool``).
- Where ``KernelSemantics.fuse_qdq_add``, ``DQ(a) + DQ(b) [-> Relu/Clip] -> Q`` with one code type
  runs as :func:`~qverify.reference.kernels.qlinear_add` (equal shapes or a one-element operand;
  other broadcasts stay on the float path).
- Every other op runs in float32 on dequantized values. Sums (Conv, MatMul, Gemm, pooling means,
  BatchNormalization) are evaluated in float64 and rounded once to float32: the exactly rounded
  result, from which a runtime's float32 summation order differs by a few ulp. Where
  ``KernelSemantics.float_conv_sum`` is ``FloatSum.MLAS``, Conv sums in onnxruntime's order
  (:func:`qverify.reference.mlas.conv_float`), and where ``float_matmul_sum`` is, MatMul/Gemm
  (``mlas.matmul_float`` / ``gemm_float``); where ``float_average_pool_kernel_order``, AveragePool
  sums each window in float32 in kernel order and divides by the count in float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

from qverify.errors import InputError, ModelError
from qverify.reference import kernels as K
from qverify.reference import mlas
from qverify.reference.semantics import FloatSum, KernelSemantics, Requantization, ZeroPointEntry

__all__ = ["run_qdq_model", "SUPPORTED_OPS"]

_CODE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def run_qdq_model(model, feeds: Mapping[str, np.ndarray], profile="onnx", *, intermediates: bool = False):
    """Execute ``model`` (``onnx.ModelProto`` or a path) on ``feeds`` (input name -> array) as a
    runtime with ``profile`` (name or Profile; default ``"onnx"``) computes it.

    Returns ``{output name: array}`` for the graph outputs; with ``intermediates=True`` (default
    False) every named tensor the reference computed (graph inputs and node outputs; the float
    output of an op fused into an integer kernel does not exist and is absent).
    """
    from qverify.reference import profiles

    model = _load(model)
    prof = profiles.get(profile)
    ksem = K.kernel_semantics(prof)
    graph = model.graph
    opset = _opset(model)
    env: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    produced: dict[str, np.ndarray] = {}
    init_names = set(env)
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}", "pass {name: array}")
    for vi in graph.input:
        if vi.name in init_names:
            continue
        if vi.name not in feeds:
            raise InputError(f"feeds has no value for model input {vi.name!r}", f"pass feeds={{{vi.name!r}: array}}")
        arr = np.asarray(feeds[vi.name])
        want = _elem_dtype(vi)
        if want is not None and arr.dtype != want:
            raise InputError(
                f"feed {vi.name!r} has dtype {arr.dtype}, the model input is {want}",
                f"convert it with .astype(np.{want.name})",
            )
        env[vi.name] = arr
        produced[vi.name] = arr
    unknown = set(feeds) - {vi.name for vi in graph.input}
    if unknown:
        raise InputError(f"feeds has names that are not model inputs: {sorted(unknown)}", "remove them")

    nodes = list(graph.node)
    fusions = _plan_fusions(nodes, graph, env, ksem) if ksem.fuse_qdq else {}
    skipped = {id(n) for f in fusions.values() for n in f.absorbed}
    ctx = _Ctx(prof, ksem, opset)
    for node in nodes:
        if id(node) in skipped:
            continue
        missing = [i for i in node.input if i and i not in env]
        if missing:
            raise ModelError(
                f"node {node.name or node.op_type!r} needs {missing}, which no earlier node produces",
                "the graph must be topologically sorted and complete (onnx.checker.check_model)",
            )
        fusion = fusions.get(id(node))
        if fusion is not None:
            outs = {fusion.output: _run_fused(fusion, env, ctx)}
        else:
            fn = _OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if fn is None:
                raise ModelError(
                    f"op {node.domain + '::' if node.domain else ''}{node.op_type} (node {node.name!r}) is not "
                    "supported by the reference graph executor",
                    f"use a model made of {', '.join(sorted(_OPS))}",
                )
            args = [env[i] if i else None for i in node.input]
            results = fn(ctx, node, _attrs(node), *args)
            outs = dict(zip([o for o in node.output], results))
        for name, value in outs.items():
            if name:
                env[name] = value
                produced[name] = value
    missing_out = [o.name for o in graph.output if o.name not in env]
    if missing_out:
        raise ModelError(f"graph outputs {missing_out} were never produced", "check the model with onnx.checker")
    if intermediates:
        return produced
    return {o.name: env[o.name] for o in graph.output}


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelError(f"model file {path!r} does not exist", "pass the path of an .onnx file")
        try:
            return onnx.load(path)
        except Exception as e:  # noqa: BLE001 - any protobuf/IO error means the same to the user
            raise ModelError(f"cannot read ONNX model {path!r}: {e}", "pass a valid .onnx file") from e
    raise InputError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}", "pass either")


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _elem_dtype(vi: onnx.ValueInfoProto) -> np.dtype | None:
    et = vi.type.tensor_type.elem_type
    if not et:
        return None
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(et))


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class _Ctx:
    profile: object
    ksem: KernelSemantics
    opset: int


# ----------------------------------------------------------------------------------------------
# QDQ fusion planning
# ----------------------------------------------------------------------------------------------
@dataclass
class _Fusion:
    op: onnx.NodeProto
    x_dq: onnx.NodeProto
    w_dq: onnx.NodeProto
    b_dq: onnx.NodeProto | None
    q: onnx.NodeProto
    absorbed: list  # nodes whose work the fused kernel does (the op, a dropped Relu/Clip, the Q)
    output: str
    kind: str = "kernel"  # "kernel": QLinearConv/QLinearMatMul/QGemm; "add": QLinearAdd (x_dq, w_dq = a, b)


def _static(name: str, graph_values: dict, producers: dict) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node), else None."""
    if name in graph_values:
        return graph_values[name]
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return _constant_value(_attrs(node))
    return None


def _plan_fusions(nodes, graph, env, ksem: KernelSemantics) -> dict[int, _Fusion]:
    producers = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}

    def dq_of(name):
        n = producers.get(name)
        return n if n is not None and n.op_type == "DequantizeLinear" else None

    def only_consumer(name):
        if name in graph_outputs:
            return None
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def const(name):
        return _static(name, env, producers) if name else None

    def per_tensor(node, idx):
        v = const(node.input[idx]) if len(node.input) > idx and node.input[idx] else None
        return v is not None and v.size == 1

    rewrite = ksem.int8_qdq_to_uint8 and not ksem.fuse_int8_activations

    def seen_in(dq, dtype):  # an activation's code type as the runtime sees it (after an s8->u8 rewrite)
        if rewrite and dtype == np.int8:
            src = producers.get(dq.input[0])
            if src is not None and _s8_pair_rewritable(src, dq, only_consumer, consumers, const):
                return np.dtype(np.uint8)
        return dtype

    def seen_out(q, dtype):
        if rewrite and dtype == np.int8:
            users = consumers.get(q.output[0], [])
            if len(users) == 1 and _s8_pair_rewritable(q, users[0], only_consumer, consumers, const):
                return np.dtype(np.uint8)
        return dtype

    def to_q(node):
        """(Q, nodes absorbed, Q's code type) reached through at most one redundant Relu/Clip."""
        chain = [node]
        nxt = only_consumer(node.output[0])
        if nxt is not None and nxt.op_type in ("Relu", "Clip"):
            chain.append(nxt)
            nxt = only_consumer(nxt.output[0])
        if nxt is None or nxt.op_type != "QuantizeLinear" or not per_tensor(nxt, 1):
            return None
        q_zp = const(nxt.input[2]) if len(nxt.input) > 2 and nxt.input[2] else None
        q_dtype = _q_output_dtype(nxt, q_zp)
        if q_dtype not in _CODE_DTYPES:
            return None
        if len(chain) == 2 and not _redundant_before_q(chain[1], nxt, q_zp, q_dtype, const):
            return None
        return nxt, chain[1:] + [nxt], q_dtype

    plans: dict[int, _Fusion] = {}
    for node in nodes:
        if node.op_type == "Add" and ksem.fuse_qdq_add and len(node.input) == 2:
            a_dq, b_dq = dq_of(node.input[0]), dq_of(node.input[1])
            if a_dq is None or b_dq is None or not (per_tensor(a_dq, 1) and per_tensor(b_dq, 1)):
                continue
            target = to_q(node)
            if target is None:
                continue
            q, absorbed, q_dtype = target
            types = {
                seen_in(a_dq, _dq_code_dtype(a_dq, env, producers)),
                seen_in(b_dq, _dq_code_dtype(b_dq, env, producers)),
                seen_out(q, q_dtype),
            }
            if len(types) != 1 or not types <= set(_CODE_DTYPES):
                continue  # (int8 Add fuses whenever all three types agree)
            plans[id(node)] = _Fusion(node, a_dq, b_dq, None, q, absorbed, q.output[0], kind="add")
            continue
        if (node.op_type == "GlobalAveragePool" and ksem.fuse_qdq_global_average_pool) or (
            node.op_type == "AveragePool" and ksem.fuse_qdq_average_pool
        ):
            x_dq = dq_of(node.input[0])
            if x_dq is None or not per_tensor(x_dq, 1):
                continue
            target = to_q(node)
            if target is None:
                continue
            q, absorbed, q_dtype = target
            types = {seen_in(x_dq, _dq_code_dtype(x_dq, env, producers)), seen_out(q, q_dtype)}
            if len(types) == 1 and types <= set(_CODE_DTYPES):
                kind = "gap" if node.op_type == "GlobalAveragePool" else "avgpool"
                plans[id(node)] = _Fusion(node, x_dq, x_dq, None, q, absorbed, q.output[0], kind=kind)
            continue
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        if len(node.input) < 2:
            continue
        x_dq, w_dq = dq_of(node.input[0]), dq_of(node.input[1])
        if x_dq is None or w_dq is None or not per_tensor(x_dq, 1):
            continue
        b_dq = None
        if len(node.input) > 2 and node.input[2]:
            b_dq = dq_of(node.input[2])
            if b_dq is None:
                continue  # a float bias: runtimes keep the op in float
            bq = const(b_dq.input[0])
            bz = const(b_dq.input[2]) if len(b_dq.input) > 2 and b_dq.input[2] else np.zeros(1, np.int32)
            if bq is None or bq.dtype != np.int32 or bq.ndim != 1 or np.any(bz != 0):
                continue
        a = _attrs(node)
        if node.op_type == "Gemm" and (
            a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
        ):
            continue
        target = to_q(node)
        if target is None:
            continue
        q, absorbed, q_dtype = target
        x_dtype = _dq_code_dtype(x_dq, env, producers)
        w_dtype = _dq_code_dtype(w_dq, env, producers)
        if x_dtype not in _CODE_DTYPES or w_dtype not in _CODE_DTYPES:
            continue
        if rewrite:
            x_dtype = seen_in(x_dq, x_dtype)
            if x_dtype != seen_out(q, q_dtype):
                continue
        if x_dtype == np.int8 and not ksem.fuse_int8_activations:
            continue
        plans[id(node)] = _Fusion(node, x_dq, w_dq, b_dq, q, absorbed, q.output[0])
    return plans


def _s8_pair_rewritable(q: onnx.NodeProto, dq: onnx.NodeProto, only_consumer, consumers, const) -> bool:
    """An int8 Q -> DQ pair that a runtime may turn into uint8: Q feeds only ``dq``, ``dq`` feeds one
    node (a DQ shared by several nodes is duplicated first, and then Q feeds several), both zero points
    are the same scalar constant (DQ may omit it when Q's is 0)."""
    if q.op_type != "QuantizeLinear" or dq.op_type != "DequantizeLinear" or only_consumer(q.output[0]) is not dq:
        return False
    if len(consumers.get(dq.output[0], [])) > 1:
        return False
    qz = const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    if qz is None or qz.size != 1 or qz.dtype != np.int8:
        return False
    dz = const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)
    return dz is not None and dz.size == 1 and dz.dtype == np.int8 and int(np.ravel(dz)[0]) == int(np.ravel(qz)[0])


def _dq_code_dtype(dq: onnx.NodeProto, env, producers) -> np.dtype | None:
    """The code dtype a DequantizeLinear consumes, when it can be known before running."""
    if dq.input[0] in env:
        return env[dq.input[0]].dtype
    if len(dq.input) > 2 and dq.input[2]:
        zp = _static(dq.input[2], env, producers)
        if zp is not None:
            return zp.dtype
    src = producers.get(dq.input[0])
    if src is not None and src.op_type == "QuantizeLinear":
        zp = _static(src.input[2], env, producers) if len(src.input) > 2 and src.input[2] else None
        return _q_output_dtype(src, zp)
    return None


def _q_zero_point(q: onnx.NodeProto, zp) -> np.ndarray:
    """Q's zero point, or a zero of its output type when the input is absent."""
    return np.asarray(zp) if zp is not None else np.zeros((), _q_output_dtype(q, None))


def _q_output_dtype(q: onnx.NodeProto, zp) -> np.dtype:
    if zp is not None:
        return np.dtype(zp.dtype)
    od = _attrs(q).get("output_dtype", 0)
    if od:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(od))
    return np.dtype(np.uint8)


def _redundant_before_q(act: onnx.NodeProto, q, q_zp, q_dtype, const) -> bool:
    lo, hi = (-128, 127) if q_dtype == np.int8 else (0, 255)
    zp = int(np.ravel(q_zp)[0]) if q_zp is not None else 0
    if act.op_type == "Relu":
        return zp == lo
    scale = const(q.input[1])
    if scale is None:
        return False
    s = float(np.ravel(scale)[0])
    cmin = const(act.input[1]) if len(act.input) > 1 and act.input[1] else None
    cmax = const(act.input[2]) if len(act.input) > 2 and act.input[2] else None
    a = _attrs(act)
    cmin = float(cmin) if cmin is not None else a.get("min", -np.inf)
    cmax = float(cmax) if cmax is not None else a.get("max", np.inf)
    return cmin <= s * (lo - zp) and cmax >= s * (hi - zp)


def _keep_params_pool(op: onnx.NodeProto, x: np.ndarray) -> bool:
    """(H2) an AveragePool that kernels.average_pool_keep_params models: 2-D, explicit pads, no
    dilation or ceil_mode, pads only with count_include_pad."""
    a = _attrs(op)
    pads = list(a.get("pads", [0, 0, 0, 0]))
    return (
        x.ndim == 4 and a.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET") and not a.get("ceil_mode", 0)
        and all(d == 1 for d in a.get("dilations", [1, 1])) and (not any(pads) or a.get("count_include_pad", 0))
    )


def _run_fused(f: _Fusion, env, ctx: _Ctx) -> np.ndarray:
    def arg(node, i, default=None):
        return env[node.input[i]] if len(node.input) > i and node.input[i] else default

    if (f.kind in ("gap", "avgpool") and not ctx.ksem.fuse_int8_activations
            and (ctx.ksem.global_average_pool_keeps_input_params or ctx.ksem.average_pool_keeps_input_params)
            and arg(f.x_dq, 0).dtype == np.int8):
        # (H2) a runtime whose int8 kernels take uint8 activations only runs an int8 pool in float
        x = _op_dequantize(ctx, f.x_dq, _attrs(f.x_dq), *[env[i] if i else None for i in f.x_dq.input])[0]
        pool = _op_gap if f.kind == "gap" else _op_avgpool
        y = pool(ctx, f.op, _attrs(f.op), x)[0]
        return _op_quantize(ctx, f.q, _attrs(f.q), y, arg(f.q, 1), arg(f.q, 2))[0]
    if f.kind == "gap" and ctx.ksem.global_average_pool_keeps_input_params:
        # (H2) the pool keeps its input's parameters; the profile's DQ -> Q moves it to Q's
        sx, zx = arg(f.x_dq, 1), arg(f.x_dq, 2)
        pooled = K.global_average_pool_keep_params(arg(f.x_dq, 0), sx, 0 if zx is None else zx)
        y = _op_dequantize(ctx, f.x_dq, _attrs(f.x_dq), pooled, sx, zx)[0]
        return _op_quantize(ctx, f.q, _attrs(f.q), y, arg(f.q, 1), arg(f.q, 2))[0]
    if f.kind == "gap":
        return K.qlinear_global_average_pool(
            arg(f.x_dq, 0), arg(f.x_dq, 1), arg(f.x_dq, 2, 0), arg(f.q, 1), _q_zero_point(f.q, arg(f.q, 2)),
            profile=ctx.ksem,
        )
    if f.kind == "avgpool" and ctx.ksem.average_pool_keeps_input_params and _keep_params_pool(f.op, arg(f.x_dq, 0)):
        # (H2) the pool keeps its input's parameters; the profile's DQ -> Q moves it to Q's
        sx, zx = arg(f.x_dq, 1), arg(f.x_dq, 2)
        a = _attrs(f.op)
        pooled = K.average_pool_keep_params(
            arg(f.x_dq, 0), sx, 0 if zx is None else zx, a["kernel_shape"], a.get("strides", [1, 1]),
            a.get("pads", [0, 0, 0, 0]), vector_channels=ctx.ksem.average_pool_vector_channels,
        )
        y = _op_dequantize(ctx, f.x_dq, _attrs(f.x_dq), pooled, sx, zx)[0]
        return _op_quantize(ctx, f.q, _attrs(f.q), y, arg(f.q, 1), arg(f.q, 2))[0]
    if f.kind == "avgpool":
        return _fused_average_pool(f, env, ctx)
    if f.kind == "add":
        a, b = arg(f.x_dq, 0), arg(f.w_dq, 0)
        if a.shape == b.shape or a.size == 1 or b.size == 1:
            return K.qlinear_add(a, arg(f.x_dq, 1), arg(f.x_dq, 2, 0), b, arg(f.w_dq, 1), arg(f.w_dq, 2, 0),
                                 arg(f.q, 1), _q_zero_point(f.q, arg(f.q, 2)))
        # other broadcasts: the float path (the runtime's per-span kernel is not modelled)
        y = _op_add_float(env[f.x_dq.output[0]], env[f.w_dq.output[0]])
        return _op_quantize(ctx, f.q, _attrs(f.q), y, arg(f.q, 1), arg(f.q, 2))[0]

    xq, sx, zx = arg(f.x_dq, 0), arg(f.x_dq, 1), arg(f.x_dq, 2, 0)
    wq, sw, zw = arg(f.w_dq, 0), arg(f.w_dq, 1), arg(f.w_dq, 2, 0)
    sy, zy = arg(f.q, 1), arg(f.q, 2)
    odt = _q_output_dtype(f.q, zy)
    if zy is None:
        zy = np.zeros((), odt)
    bias = arg(f.b_dq, 0) if f.b_dq is not None else None
    w_axis = _attrs(f.w_dq).get("axis", 1)
    per_channel = np.size(sw) > 1
    sem = ctx.ksem
    op = f.op.op_type
    a = _attrs(f.op)
    if op == "Conv":
        if per_channel and w_axis % wq.ndim != 0:
            raise ModelError(f"Conv weight DequantizeLinear has axis={w_axis}", "per-channel conv weights use axis=0")
        strides, pads, dilations = _conv_geometry(a, xq.shape, wq.shape)
        return K.qlinear_conv(
            xq, sx, zx, wq, sw, zw, sy, zy.astype(odt), bias,
            strides=strides, pads=pads, dilations=dilations, group=a.get("group", 1), profile=sem,
        )
    if op == "Gemm" and a.get("transB", 0):
        wq = wq.T
        w_axis = 1 - (w_axis % 2)
    if per_channel and (wq.ndim != 2 or w_axis % wq.ndim != wq.ndim - 1):
        raise ModelError(f"{op} weight DequantizeLinear has axis={w_axis}", "per-column weights use the N axis")
    if op == "MatMul":
        return K.qlinear_matmul(xq, sx, zx, wq, sw, zw, sy, zy.astype(odt), profile=sem)
    # Gemm: acc = A @ B + bias, then the same requantization as QLinearMatMul
    acc = K.matmul_integer(xq, wq, zx, zw, profile=sem)
    if sem.requantization == Requantization.FLOAT_TWO_STEP_ZP_BEFORE:  # (F) oneDNN: float bias after scaling
        return K.gemm_requantize_two_step(acc, sx, sw, sy, bias, zy, rounding=sem.rounding, dtype=odt)
    if bias is not None:
        acc = (acc.astype(np.int64) + bias).astype(np.int32)
    mult = K._multiplier(
        sem.multiplier_precision, np.asarray(sx).reshape(()), np.asarray(sw).reshape(-1) if per_channel else np.asarray(sw).reshape(()),
        np.asarray(sy).reshape(()),
    )
    return K._requantize(acc, mult, np.asarray(zy, np.int64).reshape(()), sem, odt)


# ----------------------------------------------------------------------------------------------
# ops (each returns a tuple of outputs)
# ----------------------------------------------------------------------------------------------
def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _q_axis(x_ndim: int, scale, a) -> tuple[int | None, int | None]:
    bs = a.get("block_size", 0) or None
    if bs is not None:
        return a.get("axis", 1), bs
    if np.size(scale) == 1:
        return None, None
    return a.get("axis", 1), None


def _op_quantize(ctx, node, a, x, scale, zp=None):
    from qverify.reference.quantize import quantize

    odt = _q_output_dtype(node, zp)
    axis, bs = _q_axis(x.ndim, scale, a)
    if np.size(scale) == 1:
        scale = np.asarray(scale).reshape(())
        zp = None if zp is None else np.asarray(zp).reshape(())
    codes = quantize(x, scale, 0 if zp is None else zp, dtype=odt.name, axis=axis, block_size=bs, profile=ctx.profile)
    return (codes.astype(odt, copy=False),)


def _op_dequantize(ctx, node, a, q, scale, zp=None):
    from qverify.reference.quantize import dequantize

    axis, bs = _q_axis(q.ndim, scale, a)
    if np.size(scale) == 1:
        scale = np.asarray(scale).reshape(())
        zp = None if zp is None else np.asarray(zp).reshape(())
    if q.dtype == np.int32:  # int32 bias: (q - zp) * s in float32, outside the 8-bit code types
        s = _f32(scale)
        if axis is not None:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = -1
            s = s.reshape(shape)
        zpv = 0 if zp is None else np.asarray(zp, np.int64).reshape(s.shape if np.size(zp) > 1 else ())
        return ((q.astype(np.int64) - zpv).astype(np.float32) * s,)
    return (dequantize(q, scale, 0 if zp is None else zp, axis=axis, block_size=bs, profile=ctx.profile),)


def _pads_for(a, in_spatial, kernel, strides, dilations) -> list[int]:
    nd = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(a.get("pads", [0] * (2 * nd)))
    if auto == "VALID":
        return [0] * (2 * nd)
    begins, ends = [], []
    for i in range(nd):
        out = -(-in_spatial[i] // strides[i])
        eff = dilations[i] * (kernel[i] - 1) + 1
        total = max(0, (out - 1) * strides[i] + eff - in_spatial[i])
        small, big = total // 2, total - total // 2
        begins.append(big if auto == "SAME_LOWER" else small)
        ends.append(small if auto == "SAME_LOWER" else big)
    return begins + ends


def _conv_geometry(a, x_shape, w_shape):
    nd = len(x_shape) - 2
    kernel = list(a.get("kernel_shape", w_shape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    pads = _pads_for(a, x_shape[2:], kernel, strides, dilations)
    return strides, pads, dilations


def _windows(xp, kernel, strides, dilations, out_shape):
    """(N, C, *out, *kernel) view of the padded input."""
    nd = len(kernel)
    eff = tuple(dilations[i] * (kernel[i] - 1) + 1 for i in range(nd))
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(None, (out_shape[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))
    sl += tuple(slice(None, None, d) for d in dilations)
    return win[sl]


def _op_conv(ctx, node, a, x, w, b=None):
    strides, pads, dilations = _conv_geometry(a, x.shape, w.shape)
    group = a.get("group", 1)
    if ctx.ksem.float_conv_sum is FloatSum.MLAS:  # (A) the runtime's own float32 summation order
        return (mlas.conv_float(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group),)
    nd = x.ndim - 2
    kernel = w.shape[2:]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    out_shape = tuple(
        (xp.shape[2 + i] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i] + 1 for i in range(nd)
    )
    win = _windows(xp, kernel, strides, dilations, out_shape)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    win = win.reshape((n, group, cg) + out_shape + tuple(kernel))
    wg = w.astype(np.float64).reshape((group, mg, cg) + tuple(kernel))
    sp = "".join(chr(ord("h") + i) for i in range(nd))
    kk = "".join(chr(ord("p") + i) for i in range(nd))
    y = np.einsum(f"ngc{sp}{kk},gmc{kk}->ngm{sp}", win, wg, optimize=True).reshape((n, m) + out_shape)
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, m) + (1,) * nd)
    return (y.astype(np.float32),)


def _op_matmul(ctx, node, a, x, y):
    if ctx.ksem.float_matmul_sum is FloatSum.MLAS:  # (A) the runtime's own float32 summation order
        return (mlas.matmul_float(x, y),)
    return (np.matmul(x.astype(np.float64), y.astype(np.float64)).astype(np.float32),)


def _op_gemm(ctx, node, a, x, y, c=None):
    if (
        ctx.ksem.float_matmul_sum is FloatSum.MLAS  # (A) the runtime's order, where it is modelled
        and not a.get("transA", 0) and a.get("alpha", 1.0) == 1.0 and (c is None or a.get("beta", 1.0) == 1.0)
    ):
        return (mlas.gemm_float(x, y, c, trans_b=bool(a.get("transB", 0))),)
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    if a.get("transA", 0):
        x = x.T
    if a.get("transB", 0):
        y = y.T
    out = a.get("alpha", 1.0) * (x @ y)
    if c is not None:
        out = out + a.get("beta", 1.0) * c.astype(np.float64)
    return (out.astype(np.float32),)


def _op_add_float(x, y):
    return np.add(x, y)


def _binary(fn):
    def op(ctx, node, a, x, y):
        return (fn(x, y),)

    return op


def _op_relu(ctx, node, a, x):
    return (np.maximum(x, x.dtype.type(0)),)


def _op_clip(ctx, node, a, x, lo=None, hi=None):
    lo = a.get("min", None) if lo is None and ctx.opset < 11 else lo
    hi = a.get("max", None) if hi is None and ctx.opset < 11 else hi
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, x.dtype))
    return (y,)


def _pool_geometry(a, x):
    nd = x.ndim - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    pads = _pads_for(a, x.shape[2:], kernel, strides, dilations)
    ceil = a.get("ceil_mode", 0)
    out, extra = [], []
    for i in range(nd):
        eff = dilations[i] * (kernel[i] - 1) + 1
        span = x.shape[2 + i] + pads[i] + pads[nd + i] - eff
        o = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= x.shape[2 + i] + pads[i]:
            o -= 1  # the last window must start inside the input or its begin padding
        out.append(o)
        extra.append(max(0, (o - 1) * strides[i] + eff - (x.shape[2 + i] + pads[i] + pads[nd + i])))
    return nd, kernel, strides, dilations, pads, tuple(out), extra


def _op_maxpool(ctx, node, a, x):
    if len(node.output) > 1 and node.output[1]:
        raise ModelError("MaxPool with an Indices output is not supported", "drop the second output")
    nd, kernel, strides, dilations, pads, out, extra = _pool_geometry(a, x)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[nd + i] + extra[i]) for i in range(nd)]
    xp = np.pad(x, width, constant_values=-np.inf)
    win = _windows(xp, kernel, strides, dilations, out)
    return (win.max(axis=tuple(range(-nd, 0))).astype(x.dtype),)


def _op_avgpool(ctx, node, a, x):
    nd, kernel, strides, dilations, pads, out, extra = _pool_geometry(a, x)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[nd + i] + extra[i]) for i in range(nd)]
    if ctx.ksem.float_average_pool_kernel_order and x.dtype == np.float32:  # (A) the runtime's own order
        win = _windows(np.pad(x, width), kernel, strides, dilations, out)
        total = np.zeros(win.shape[: 2 + nd], np.float32)
        for k in np.ndindex(*kernel):
            total += win[(Ellipsis,) + k]  # float32, one window position at a time
        count = _pool_count(a, x, nd, kernel, strides, dilations, pads, out, extra).astype(np.float32)
        return (total / count,)
    xp = np.pad(x.astype(np.float64), width)
    total = _windows(xp, kernel, strides, dilations, out).sum(axis=tuple(range(-nd, 0)))
    count = _pool_count(a, x, nd, kernel, strides, dilations, pads, out, extra)
    return ((total / count).astype(x.dtype),)


def _fused_average_pool(f: _Fusion, env, ctx: _Ctx) -> np.ndarray:
    """DQ -> AveragePool -> Q as one pool (KernelSemantics.fuse_qdq_average_pool): the dequantized
    window summed in float32 in kernel order (row-major), ``avg = f32(sum / count)``, then
    ``rne(f32(avg / sy) + zy)`` (the profile's QuantizeLinear with the zero point before rounding).
    With ``KernelSemantics.average_pool_global_fallback``, ``kernel == spatial shape`` and all pads 0:
    :func:`~qverify.reference.kernels.qlinear_global_average_pool` instead. With
    ``KernelSemantics.average_pool_divide_by_kernel_size`` and ``count_include_pad``:
    ``count = prod(kernel_shape)`` for every window."""
    import dataclasses

    from qverify.reference.quantize import quantize

    x = _op_dequantize(ctx, f.x_dq, _attrs(f.x_dq), *[env[i] if i else None for i in f.x_dq.input])[0]
    a = _attrs(f.op)
    nd, kernel, strides, dilations, pads, out, extra = _pool_geometry(a, x)
    if ctx.ksem.average_pool_global_fallback and list(x.shape[2:]) == kernel and not any(pads):
        def arg(node, i, default=None):
            return env[node.input[i]] if len(node.input) > i and node.input[i] else default

        return K.qlinear_global_average_pool(
            arg(f.x_dq, 0), arg(f.x_dq, 1), arg(f.x_dq, 2, 0), arg(f.q, 1), _q_zero_point(f.q, arg(f.q, 2)),
            profile=ctx.ksem,
        )
    width = [(0, 0), (0, 0)] + [(pads[i], pads[nd + i] + extra[i]) for i in range(nd)]
    win = _windows(np.pad(x, width), kernel, strides, dilations, out)
    total = np.zeros(win.shape[: 2 + nd], np.float32)
    for k in np.ndindex(*kernel):
        total += win[(Ellipsis,) + k]  # float32, one window position at a time
    if ctx.ksem.average_pool_divide_by_kernel_size and a.get("count_include_pad", 0):
        total /= np.float32(np.prod(kernel))
    else:
        total /= _pool_count(a, x, nd, kernel, strides, dilations, pads, out, extra).astype(np.float32)
    prof = ctx.profile
    zp_before = dataclasses.replace(prof.quant, zero_point=ZeroPointEntry.BEFORE_ROUNDING)
    prof = dataclasses.replace(prof, name=f"{prof.name}+pool", quant=zp_before, per_axis=None)
    zy = env[f.q.input[2]] if len(f.q.input) > 2 and f.q.input[2] else None
    odt = _q_output_dtype(f.q, zy)
    sy = np.asarray(env[f.q.input[1]]).reshape(())
    return quantize(total, sy, 0 if zy is None else np.asarray(zy).reshape(()), dtype=odt.name, profile=prof)


def _pool_count(a, x, nd, kernel, strides, dilations, pads, out, extra) -> np.ndarray:
    """Cells each window averages over: input cells, plus explicit pads when count_include_pad."""
    width = [(0, 0), (0, 0)] + [(pads[i], pads[nd + i] + extra[i]) for i in range(nd)]
    inside = np.pad(np.ones((1, 1) + x.shape[2:]), width)
    if a.get("count_include_pad", 0):
        inside = np.pad(np.ones((1, 1) + tuple(x.shape[2 + i] + pads[i] + pads[nd + i] for i in range(nd))),
                        [(0, 0), (0, 0)] + [(0, extra[i]) for i in range(nd)])
    return _windows(inside, kernel, strides, dilations, out).sum(axis=tuple(range(-nd, 0)))


def _op_gap(ctx, node, a, x):
    axes = tuple(range(2, x.ndim))
    return (x.astype(np.float64).mean(axis=axes, keepdims=True).astype(x.dtype),)


def _op_flatten(ctx, node, a, x):
    axis = a.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return (x.reshape(lead, -1),)


def _op_reshape(ctx, node, a, x, shape):
    shape = [int(s) for s in np.asarray(shape).ravel()]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return (x.reshape(shape),)


def _op_transpose(ctx, node, a, x):
    perm = a.get("perm", None)
    return (np.transpose(x, perm),)


def _op_concat(ctx, node, a, *xs):
    return (np.concatenate(xs, axis=a["axis"]),)


def _op_sigmoid(ctx, node, a, x):
    xd = x.astype(np.float64)
    return ((1.0 / (1.0 + np.exp(-xd))).astype(x.dtype),)


def _op_softmax(ctx, node, a, x):
    xd = x.astype(np.float64)
    if ctx.opset >= 13:
        axis = a.get("axis", -1)
        e = np.exp(xd - xd.max(axis=axis, keepdims=True))
        return ((e / e.sum(axis=axis, keepdims=True)).astype(x.dtype),)
    axis = a.get("axis", 1) % x.ndim  # opset < 13: softmax over the flattened trailing dims
    flat = xd.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return ((e / e.sum(axis=1, keepdims=True)).reshape(x.shape).astype(x.dtype),)


def _op_identity(ctx, node, a, x):
    return (x,)


def _op_batchnorm(ctx, node, a, x, scale, bias, mean, var):
    if len([o for o in node.output if o]) > 1 or a.get("training_mode", 0):
        raise ModelError("BatchNormalization in training mode is not supported", "export the model in eval mode")
    eps = a.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xd = x.astype(np.float64)
    y = (xd - mean.astype(np.float64).reshape(shape)) / np.sqrt(var.astype(np.float64).reshape(shape) + eps)
    y = y * scale.astype(np.float64).reshape(shape) + bias.astype(np.float64).reshape(shape)
    return (y.astype(x.dtype),)


def _constant_value(a) -> np.ndarray:
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dt in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.asarray(a[key], dt)
    for key, dt in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(list(a[key]), dt)
    raise ModelError(f"Constant with attributes {sorted(a)} is not supported", "use a tensor 'value'")


def _op_constant(ctx, node, a):
    return (_constant_value(a),)


def _op_shape(ctx, node, a, x):
    return (np.asarray(x.shape, np.int64)[a.get("start", 0) : a.get("end", None)],)


def _op_gather(ctx, node, a, x, idx):
    return (np.take(x, idx.astype(np.int64), axis=a.get("axis", 0)),)


def _axes_arg(ctx, a, axes):
    if axes is not None:
        return [int(v) for v in np.asarray(axes).ravel()]
    return list(a.get("axes", [])) or None


def _op_unsqueeze(ctx, node, a, x, axes=None):
    axes = _axes_arg(ctx, a, axes)
    out_nd = x.ndim + len(axes)
    for ax in sorted(v % out_nd for v in axes):
        x = np.expand_dims(x, ax)
    return (x,)


def _op_squeeze(ctx, node, a, x, axes=None):
    axes = _axes_arg(ctx, a, axes)
    return (np.squeeze(x, axis=None if axes is None else tuple(v % x.ndim for v in axes)),)


def _op_cast(ctx, node, a, x):
    return (x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"])),)


# ---- ops added for the rapidocr networks (float32 as ONNX specifies; sums in float64) ----------
def _op_hard_sigmoid(ctx, node, a, x):
    alpha = x.dtype.type(a.get("alpha", 0.2))
    beta = x.dtype.type(a.get("beta", 0.5))
    return (np.clip(alpha * x + beta, x.dtype.type(0), x.dtype.type(1)),)


def _op_hard_swish(ctx, node, a, x):
    # y = x * max(0, min(1, x/6 + 1/2)) (alpha 1/6 rounded to float32, as runtimes store it)
    gate = np.clip(x * x.dtype.type(1.0 / 6.0) + x.dtype.type(0.5), x.dtype.type(0), x.dtype.type(1))
    return (x * gate,)


def _op_unary(fn):
    def op(ctx, node, a, x):
        return (fn(x).astype(x.dtype, copy=False),)

    return op


def _op_pow(ctx, node, a, x, y):
    return (np.power(x, np.asarray(y).astype(x.dtype)).astype(x.dtype, copy=False),)


def _op_reduce_mean(ctx, node, a, x, axes=None):
    axes = _axes_arg(ctx, a, axes)
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return (x,)
        axes = list(range(x.ndim))
    ax = tuple(sorted({v % x.ndim for v in axes}))
    y = x.astype(np.float64).mean(axis=ax, keepdims=bool(a.get("keepdims", 1)))
    return (np.asarray(y).astype(x.dtype),)


def _op_slice(ctx, node, a, x, starts=None, ends=None, axes=None, steps=None):
    if ctx.opset < 10:  # attributes starts/ends/axes, steps always 1
        starts, ends, axes = a["starts"], a["ends"], a.get("axes", None)
    starts = [int(v) for v in np.asarray(starts).ravel()]
    ends = [int(v) for v in np.asarray(ends).ravel()]
    axes = list(range(len(starts))) if axes is None else [int(v) % x.ndim for v in np.asarray(axes).ravel()]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).ravel()]
    if 0 in steps:
        raise ModelError(f"Slice node {node.name!r} has a step of 0", "steps must be nonzero")
    sl = [slice(None)] * x.ndim
    for ax, b, e, st in zip(axes, starts, ends, steps):
        sl[ax] = slice(b, e, st)  # Python's slice clamping is ONNX's (ends of INT64 min/max included)
    return (x[tuple(sl)],)


def _op_split(ctx, node, a, x, split=None):
    axis = a.get("axis", 0) % x.ndim
    n_out = len(node.output)
    if split is None and "split" in a:
        split = a["split"]
    if split is None:
        size = x.shape[axis]
        chunk = -(-size // n_out)  # opset 18: the last chunk is smaller when it does not divide
        split = [min(chunk, size - i * chunk) for i in range(n_out)]
    bounds = np.cumsum([int(v) for v in np.asarray(split).ravel()])[:-1]
    return tuple(np.split(x, bounds, axis=axis))


def _op_pad(ctx, node, a, x, pads=None, value=None, axes=None):
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if ctx.opset < 11:
        pads, value = a["pads"], a.get("value", 0.0)
    pads = [int(v) for v in np.asarray(pads).ravel()]
    axes = list(range(x.ndim)) if axes is None else [int(v) % x.ndim for v in np.asarray(axes).ravel()]
    k = len(axes)
    width = [(0, 0)] * x.ndim
    for i, ax in enumerate(axes):
        width[ax] = (pads[i], pads[k + i])
    if any(p < 0 for w in width for p in w):  # negative pads crop
        sl = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(width))
        x = x[sl]
        width = [(max(0, b), max(0, e)) for b, e in width]
    if mode == "constant":
        v = 0 if value is None else np.asarray(value).reshape(()).astype(x.dtype)
        return (np.pad(x, width, mode="constant", constant_values=v),)
    if mode in ("reflect", "edge", "wrap"):
        return (np.pad(x, width, mode=mode),)
    raise ModelError(f"Pad mode {mode!r} is not supported", "use constant, reflect, edge or wrap")


def _op_conv_transpose(ctx, node, a, x, w, b=None):
    """y[n, g*mg+m, i*s + k*d - pad_begin] += sum_c x[n, g*cg+c, i] * w[g*cg+c, m, k] (float64)."""
    nd = x.ndim - 2
    if "output_shape" in a:
        raise ModelError(f"ConvTranspose node {node.name!r} sets output_shape", "export it with explicit pads")
    auto = a.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "", "VALID"):
        raise ModelError(f"ConvTranspose node {node.name!r} uses auto_pad={auto!r}", "export it with explicit pads")
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    pads = list(a.get("pads", [0] * (2 * nd)))
    out_pad = list(a.get("output_padding", [0] * nd))
    group = a.get("group", 1)
    n, c = x.shape[:2]
    cg, mg = c // group, w.shape[1]
    full = [strides[i] * (x.shape[2 + i] - 1) + out_pad[i] + dilations[i] * (kernel[i] - 1) + 1 for i in range(nd)]
    y = np.zeros((n, group, mg) + tuple(full), np.float64)
    xg = x.astype(np.float64).reshape((n, group, cg) + x.shape[2:])
    wg = w.astype(np.float64).reshape((group, cg, mg) + tuple(kernel))
    sp = "".join(chr(ord("h") + i) for i in range(nd))
    for k in np.ndindex(*kernel):
        contrib = np.einsum(f"ngc{sp},gcm->ngm{sp}", xg, wg[(Ellipsis,) + k])
        sl = tuple(
            slice(k[i] * dilations[i], k[i] * dilations[i] + strides[i] * (x.shape[2 + i] - 1) + 1, strides[i])
            for i in range(nd)
        )
        y[(slice(None), slice(None), slice(None)) + sl] += contrib
    y = y.reshape((n, group * mg) + tuple(full))
    y = y[(slice(None), slice(None)) + tuple(slice(pads[i], full[i] - pads[nd + i]) for i in range(nd))]
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * nd)
    return (y.astype(np.float32),)


def _resize_source(mode_ct, out_i, in_len, out_len, scale, roi_lo=0.0, roi_hi=1.0):
    """Source coordinate of output index ``out_i`` (float64) for coordinate_transformation_mode."""
    if mode_ct == "half_pixel":
        return (out_i + 0.5) / scale - 0.5
    if mode_ct == "pytorch_half_pixel":
        return (out_i + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(out_i, np.float64)
    if mode_ct == "align_corners":
        return out_i * ((in_len - 1) / (out_len - 1)) if out_len > 1 else np.zeros_like(out_i, np.float64)
    if mode_ct == "asymmetric":
        return out_i / scale
    if mode_ct == "half_pixel_symmetric":
        adj = out_len / (scale * in_len)
        center = in_len / 2.0
        offset = center * (1 - adj)
        return offset + (out_i + 0.5) / scale - 0.5
    if mode_ct == "tf_crop_and_resize":
        if out_len > 1:
            return roi_lo * (in_len - 1) + out_i * (roi_hi - roi_lo) * (in_len - 1) / (out_len - 1)
        return np.full_like(out_i, 0.5 * (roi_lo + roi_hi) * (in_len - 1), np.float64)
    raise ModelError(f"Resize coordinate_transformation_mode {mode_ct!r} is not supported",
                     "use half_pixel, pytorch_half_pixel, align_corners, asymmetric or tf_crop_and_resize")


def _op_resize(ctx, node, a, x, roi=None, scales=None, sizes=None):
    """Resize, mode ``nearest`` (every nearest_mode) or ``linear`` (separable, per axis), opset >= 11."""
    def dec(v):
        return v.decode() if isinstance(v, bytes) else v

    mode = dec(a.get("mode", b"nearest"))
    ct = dec(a.get("coordinate_transformation_mode", b"half_pixel"))
    nearest = dec(a.get("nearest_mode", b"round_prefer_floor"))
    if ctx.opset < 11:
        raise ModelError("Resize before opset 11 is not supported", "export with opset 11 or later")
    if a.get("antialias", 0) or a.get("axes") or dec(a.get("keep_aspect_ratio_policy", b"stretch")) != "stretch":
        raise ModelError(f"Resize node {node.name!r} uses antialias/axes/keep_aspect_ratio_policy",
                         "export a plain Resize")
    if sizes is not None and np.size(sizes):
        out_shape = [int(v) for v in np.asarray(sizes).ravel()]
        scl = [out_shape[i] / x.shape[i] for i in range(x.ndim)]
    else:
        scl = [float(v) for v in np.asarray(scales, np.float32).ravel()]
        out_shape = [int(np.floor(x.shape[i] * scl[i])) for i in range(x.ndim)]
    roi_v = np.asarray(roi, np.float64).ravel() if roi is not None and np.size(roi) else None
    y = x
    for ax in range(x.ndim):
        if out_shape[ax] == x.shape[ax] and scl[ax] == 1.0 and ct != "tf_crop_and_resize":
            continue
        in_len, out_len = x.shape[ax], out_shape[ax]
        lo, hi = (roi_v[ax], roi_v[x.ndim + ax]) if roi_v is not None else (0.0, 1.0)
        src = _resize_source(ct, np.arange(out_len, dtype=np.float64), in_len, out_len, scl[ax], lo, hi)
        if mode == "nearest":
            if nearest == "round_prefer_floor":
                idx = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
            elif nearest == "round_prefer_ceil":
                idx = np.floor(src + 0.5)
            elif nearest == "floor":
                idx = np.floor(src)
            elif nearest == "ceil":
                idx = np.ceil(src)
            else:
                raise ModelError(f"Resize nearest_mode {nearest!r} is not supported", "use round_prefer_floor/ceil, floor or ceil")
            y = np.take(y, np.clip(idx, 0, in_len - 1).astype(np.int64), axis=ax)
        elif mode == "linear":
            s = np.clip(src, 0, in_len - 1)
            i0 = np.floor(s).astype(np.int64)
            i1 = np.minimum(i0 + 1, in_len - 1)
            t = (s - i0).reshape([-1 if i == ax else 1 for i in range(x.ndim)])
            yd = y.astype(np.float64)
            y = (np.take(yd, i0, axis=ax) * (1 - t) + np.take(yd, i1, axis=ax) * t).astype(x.dtype)
        else:
            raise ModelError(f"Resize mode {mode!r} is not supported", "use nearest or linear")
    return (y,)



def _op_dynamic_quantize(ctx, node, a, x):
    """DynamicQuantizeLinear: ``lo = min(0, min x)``, ``hi = max(0, max x)``, uint8 scale/zero point
    from :func:`qverify.reference.scales.choose_qparams` (asymmetric, ``s = (hi - lo) / 255``, or
    ``/ 127`` with ``KernelSemantics.dynamic_activation_reduce_range``; ``zp = rne(-lo / s)``),
    ``y = quantize(x, s, zp)`` with the profile; outputs ``(y, s, zp)``."""
    from qverify.reference.quantize import quantize
    from qverify.reference.scales import choose_qparams

    x = _f32(x)
    if x.size == 0:
        raise InputError("DynamicQuantizeLinear got an empty tensor", "feed at least one element")
    qp = choose_qparams(x.min(), x.max(), dtype="uint8", reduce_range=ctx.ksem.dynamic_activation_reduce_range)
    s = np.asarray(qp.scale, np.float32).reshape(())
    zp = np.asarray(qp.zero_point).astype(np.uint8).reshape(())
    y = quantize(x, s, zp, dtype="uint8", profile=ctx.profile)
    return (np.asarray(y).astype(np.uint8, copy=False), s, zp)


def _op_matmul_integer(ctx, node, a, x, w, x_zp=None, w_zp=None):
    """MatMulInteger as :func:`qverify.reference.kernels.matmul_integer` with the profile's kernel semantics."""
    return (K.matmul_integer(x, w, 0 if x_zp is None else x_zp, 0 if w_zp is None else w_zp, profile=ctx.profile),)

_OPS = {
    "QuantizeLinear": _op_quantize,
    "DequantizeLinear": _op_dequantize,
    "Conv": _op_conv,
    "Gemm": _op_gemm,
    "MatMul": _op_matmul,
    "Add": _binary(np.add),  # (fused: see _plan_fusions)
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Relu": _op_relu,
    "Clip": _op_clip,
    "MaxPool": _op_maxpool,
    "AveragePool": _op_avgpool,
    "GlobalAveragePool": _op_gap,
    "Flatten": _op_flatten,
    "Reshape": _op_reshape,
    "Transpose": _op_transpose,
    "Concat": _op_concat,
    "Sigmoid": _op_sigmoid,
    "Softmax": _op_softmax,
    "Identity": _op_identity,
    "BatchNormalization": _op_batchnorm,
    "Constant": _op_constant,
    "Shape": _op_shape,
    "Gather": _op_gather,
    "Unsqueeze": _op_unsqueeze,
    "Squeeze": _op_squeeze,
    "Cast": _op_cast,
    "HardSigmoid": _op_hard_sigmoid,
    "HardSwish": _op_hard_swish,
    "Sqrt": _op_unary(np.sqrt),
    "Pow": _op_pow,
    "ReduceMean": _op_reduce_mean,
    "Slice": _op_slice,
    "Split": _op_split,
    "Pad": _op_pad,
    "ConvTranspose": _op_conv_transpose,
    "Resize": _op_resize,
    # dynamic quantization (qverify.quantizer.dynamic exports)
    "DynamicQuantizeLinear": _op_dynamic_quantize,
    "MatMulInteger": _op_matmul_integer,
}
SUPPORTED_OPS = tuple(sorted(_OPS))
