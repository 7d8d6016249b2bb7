"""onnxruntime's float Conv and ``FloatSum.MLAS`` (qverify.reference.mlas.conv_float).

Found by ``qverify conformance --backends onnxruntime --ops qdq_conv_relu --examples 200 --seed 0``
(row ``all+qdqisint8allowed``, uint8 x/w/y): runtime 215, reference 214 on one code. DQ -> Conv -> Relu
-> Q whose Relu is not a no-op before Q (Q's zero point above its qmin) does not become QLinearConv:
onnxruntime 1.32 builds DQ, DQ, DQ -> com.microsoft.FusedConv(activation=Relu) -> QuantizeLinear, with
or without session.qdqisint8allowed, for uint8 and int8 weights alike. That float conv summed in MLAS's
order gives 148996.27 where the exact sum is 148996.25; / 1722.5 that is 86.50001 -> 87, not the tie
86.5 -> 86. The onnxruntime profiles now sum a float Conv in MLAS's order, which these tests confirm
bit for bit: the repro, Conv at optimisation disabled (every MLAS kernel path) and the QDQ subgraph at
'all'. Tests against the runtime skip with the reason when onnxruntime is not installed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qverify.reference import mlas, profiles
from qverify.reference.graph import run_qdq_model
from qverify.reference.semantics import FloatSum

S8_ALLOWED = {"session.qdqisint8allowed": "1"}

# the shrunk conformance repro (seed 0): x (1, 5, 7, 4), w (1, 5, 2, 2), pads 1, bias 3004
_X = [
    180, 242, 154, 234, 231, 47, 227, 246, 42, 15, 113, 225, 89, 189, 61, 242, 217, 86, 182, 96, 19, 73,
    102, 154, 20, 243, 124, 255, 249, 181, 247, 236, 211, 183, 45, 5, 190, 176, 203, 164, 193, 160, 67,
    55, 168, 3, 165, 239, 31, 178, 197, 30, 79, 88, 10, 56, 105, 30, 230, 2, 27, 164, 35, 220, 76, 102,
    92, 253, 69, 77, 159, 69, 246, 178, 221, 169, 178, 31, 254, 246, 46, 203, 78, 47, 95, 10, 54, 70,
    109, 4, 173, 190, 9, 191, 192, 175, 59, 75, 239, 235, 110, 235, 250, 57, 247, 113, 79, 25, 166, 122,
    110, 78, 249, 125, 161, 193, 72, 152, 62, 243, 28, 93, 189, 182, 1, 230, 177, 166, 206, 161, 137,
    33, 192, 250, 90, 130, 85, 11, 131, 219,
]
_W = [56, 89, 22, 117, 124, 214, 102, 128, 226, 245, 54, 160, 105, 151, 115, 94, 224, 206, 68, 13]
REPRO = dict(
    x=np.array(_X, np.uint8).reshape(1, 5, 7, 4), w=np.array(_W, np.uint8).reshape(1, 5, 2, 2),
    sx=1.03515625, zx=7, sw=3.25, zw=103, sy=1722.5, zy=128, bias=np.array([3004], np.int32),
    pads=1, strides=1, dilations=1, group=1,
)


def _ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install onnxruntime")


def _qdq_model(x, w, sx, zx, sw, zw, sy, zy, bias, pads, strides, dilations, group):
    """Codes x -> DQ -> Conv(DQ(w), DQ(bias)) -> Relu -> Q -> codes (constant parameters, 2-D)."""
    xt = helper.np_dtype_to_tensor_dtype(x.dtype)
    f32 = np.float32
    inits = [
        numpy_helper.from_array(np.array(sx, f32), "sx"), numpy_helper.from_array(np.array(zx, x.dtype), "zx"),
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(sw, f32), "sw"),
        numpy_helper.from_array(np.array(zw, w.dtype), "zw"), numpy_helper.from_array(np.array(sy, f32), "sy"),
        numpy_helper.from_array(np.array(zy, x.dtype), "zy"), numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array(f32(sx) * f32(sw), f32), "sb"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
        helper.make_node("DequantizeLinear", ["b", "sb"], ["bd"]),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[pads] * 4, strides=[strides] * 2,
                         dilations=[dilations] * 2, group=group),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"]),
    ]
    g = helper.make_graph(nodes, "qdq_conv_relu", [helper.make_tensor_value_info("x", xt, list(x.shape))],
                          [helper.make_tensor_value_info("y", xt, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _float_conv_model(x, w, b, pads, strides, dilations, group):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=list(pads), strides=list(strides),
                              dilations=list(dilations), group=group)]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _session(model, level="ORT_ENABLE_ALL", config=None, optimized_path=None):
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = 1  # the order modelled is MLAS's single-thread one
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _exact_sum(profile: str) -> profiles.Profile:
    p = profiles.get(profile)
    return dataclasses.replace(p, name=p.name + "-exact-sum",
                               kernel=dataclasses.replace(p.kernel, float_conv_sum=FloatSum.EXACT))


# ---------------------------------------------------------------------------------------------- repro
@pytest.mark.parametrize("config", [{}, S8_ALLOWED], ids=["all", "all+qdqisint8allowed"])
def test_relu_above_qmin_keeps_the_conv_float(config, tmp_path):
    import onnx

    def ops(case):
        path = tmp_path / "opt.onnx"
        _session(_qdq_model(**case), config=config, optimized_path=path)
        return [(n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute})
                for n in onnx.load(path).graph.node]

    nodes = ops(REPRO)
    assert [op for op, _ in nodes if op not in ("DequantizeLinear",)] == ["FusedConv", "QuantizeLinear"]
    assert dict(nodes)["FusedConv"]["activation"] == b"Relu"
    # Q's zero point at its qmin: the Relu is a no-op, and the subgraph becomes QLinearConv
    assert "QLinearConv" in [op for op, _ in ops({**REPRO, "zy": 0})]


@pytest.mark.parametrize(("config", "profile"), [({}, "onnxruntime.fused"), (S8_ALLOWED, "onnxruntime.fused_s8")],
                         ids=["all", "all+qdqisint8allowed"])
def test_repro_case_is_exact_with_the_mlas_sum(config, profile):
    m = _qdq_model(**REPRO)
    got = _session(m, config=config).run(None, {"x": REPRO["x"]})[0]
    ref = run_qdq_model(m, {"x": REPRO["x"]}, profile, intermediates=True)
    np.testing.assert_array_equal(ref["y"], got)
    assert got.ravel()[15] == 215 and ref["c"].ravel()[15] == np.nextafter(np.float32(148996.25), np.float32(1e9))
    # the exactly rounded sum (FloatSum.EXACT) lands on the tie 86.5 and rounds to 86: the found case
    old = run_qdq_model(m, {"x": REPRO["x"]}, _exact_sum(profile), intermediates=True)
    assert old["c"].ravel()[15] == np.float32(148996.25)
    assert np.flatnonzero(old["y"] != got).tolist() == [15] and old["y"].ravel()[15] == 214


# ------------------------------------------------------------------------------- reference only
# K = 6 products 2^24, 1, 1, 0, 1, 1 (one output channel, 1x1 kernel over 6 channels): exact 2^24 + 4;
# one float32 add at a time 2^24 (each + 1 is a tie that rounds to even); MLAS's M = 1 kernel adds the
# group ((2^24 + 1) + 1) + 0 = 2^24 and the pair 1 + 1 = 2: 2^24 + 2
_K6 = np.array([2.0**24, 1.0, 1.0, 0.0, 1.0, 1.0], np.float32).reshape(1, 6, 1, 1)


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]], ids=["gemm-on-input", "im2col"])
def test_m1_kernel_sums_k_in_groups_of_four(strides):
    y = mlas.conv_float(_K6, np.ones((1, 6, 1, 1), np.float32), None, strides=strides, pads=[0] * 4,
                        dilations=[1, 1])
    assert y.ravel().tolist() == [2.0**24 + 2]


def test_graph_conv_follows_the_profiles_float_conv_sum():
    assert profiles.get("onnx").kernel.float_conv_sum is FloatSum.EXACT
    for name in ("onnxruntime", "onnxruntime.fused", "onnxruntime.fused_s8"):
        assert profiles.get(name).kernel.float_conv_sum is FloatSum.MLAS
    m = _float_conv_model(_K6, np.ones((1, 6, 1, 1), np.float32), np.zeros(1, np.float32), [0] * 4, [1, 1],
                          [1, 1], 1)
    assert run_qdq_model(m, {"x": _K6}, "onnx")["y"].ravel().tolist() == [2.0**24 + 4]
    assert run_qdq_model(m, {"x": _K6}, "onnxruntime")["y"].ravel().tolist() == [2.0**24 + 2]


# --------------------------------------------------------------------------- against the runtime
@st.composite
def _geometry(draw):
    nd = draw(st.sampled_from([2, 2, 2, 2, 1, 3]))
    depthwise = draw(st.booleans())
    cin = draw(st.integers(1, 6)) if draw(st.integers(0, 4)) else draw(st.integers(7, 40))
    group = cin if depthwise else 1
    cout = cin * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 8))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    dil = [draw(st.sampled_from([1, 1, 2])) for _ in range(nd)]
    strides = [draw(st.sampled_from([1, 1, 2])) for _ in range(nd)]
    pads = [draw(st.integers(0, 1)) for _ in range(2 * nd)]
    spatial = []
    for i in range(nd):
        lo = max(1, dil[i] * (kernel[i] - 1) + 1 - pads[i] - pads[nd + i])
        spatial.append(draw(st.integers(lo, lo + (12 if nd < 3 else 3))))
    batch = draw(st.sampled_from([1, 1, 1, 2]))
    return (batch, cin, *spatial), (cout, cin // group, *kernel), pads, strides, dil, group


@given(_geometry(), st.integers(0, 2**32 - 1))
def test_conv_float_equals_onnxruntime_conv(geometry, seed):
    """Conv at optimisation disabled (MLAS NCHW, one thread): bit-exact on every kernel path."""
    xs, ws, pads, strides, dil, group = geometry
    rng = np.random.default_rng(seed)
    x = (rng.integers(-128, 128, xs) * np.float32(rng.uniform(0.01, 2))).astype(np.float32)
    w = (rng.integers(-128, 128, ws) * np.float32(rng.uniform(0.01, 2))).astype(np.float32)
    b = (rng.integers(-3000, 3000, ws[0]) * np.float32(rng.uniform(0.01, 2))).astype(np.float32)
    got = _session(_float_conv_model(x, w, b, pads, strides, dil, group), "ORT_DISABLE_ALL").run(None, {"x": x})[0]
    want = mlas.conv_float(x, w, b, strides=strides, pads=pads, dilations=dil, group=group)
    np.testing.assert_array_equal(want, got)


@st.composite
def _qdq_cases(draw):
    """DQ -> Conv -> Relu -> Q, uint8 x/y with Q's zero point above 0, uint8 or int8 weights, the
    conformance families' geometries (full or depthwise)."""
    depthwise = draw(st.booleans())
    cin = draw(st.integers(1, 6))
    group = cin if depthwise else 1
    cout = cin * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil, stride, pad = draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2])), draw(st.integers(0, 1))
    h = draw(st.integers(max(1, (kh - 1) * dil + 1 - 2 * pad), (kh - 1) * dil + 6))
    wd = draw(st.integers(max(1, (kw - 1) * dil + 1 - 2 * pad), (kw - 1) * dil + 6))
    w_dt = draw(st.sampled_from([np.uint8, np.int8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    wi = np.iinfo(w_dt)
    scale = st.floats(2.0**-8, 4.0, width=32)
    sx, sw = draw(scale), draw(scale)
    k = (cin // group) * kh * kw
    return dict(
        x=rng.integers(0, 256, (1, cin, h, wd)).astype(np.uint8),
        w=rng.integers(wi.min, wi.max + 1, (cout, cin // group, kh, kw)).astype(w_dt),
        sx=sx, zx=draw(st.integers(0, 255)), sw=sw, zw=draw(st.integers(int(wi.min), int(wi.max))),
        sy=float(np.float32(sx * sw * draw(st.floats(1.0, 4.0 * k, width=32)))), zy=draw(st.integers(1, 255)),
        bias=rng.integers(-(2**12), 2**12, cout).astype(np.int32),
        pads=pad, strides=stride, dilations=dil, group=group,
    )


@given(_qdq_cases(), st.sampled_from([({}, "onnxruntime.fused"), (S8_ALLOWED, "onnxruntime.fused_s8")]))
def test_qdq_conv_relu_above_qmin_equals_onnxruntime(case, variant):
    """The float path at optimisation 'all' (com.microsoft.FusedConv): the profiles reproduce it."""
    config, profile = variant
    m = _qdq_model(**case)
    got = _session(m, config=config).run(None, {"x": case["x"]})[0]
    np.testing.assert_array_equal(run_qdq_model(m, {"x": case["x"]}, profile)["y"], got)
