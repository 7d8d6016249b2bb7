"""onnxruntime's float MatMul / Gemm and ``KernelSemantics.float_matmul_sum = FloatSum.MLAS``
(qverify.reference.mlas.matmul_float / gemm_float).

``qdq_matmul`` / ``qdq_gemm`` at optimisation 'disabled' run MatMul/Gemm in float (the DQ outputs are
not constants, so nothing is prepacked): MLAS's SGEMM, whose kernel (M = 1, N = 1, FMA with K slices)
fixes the float32 summation order; Gemm's C is the GEMM's initial output (beta 1). Conformance seeds 1
and 2 (300 examples) found 1 LSB differences from the exactly rounded sum there (0.99-0.997 exact).
The onnxruntime profiles now sum in MLAS's order; checked bit for bit here with both operands as graph
inputs, as the DQ outputs are. Skipped with the reason when onnxruntime is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from qverify.reference import mlas, profiles
from qverify.reference.graph import run_qdq_model
from qverify.reference.semantics import FloatSum


def _model(node, feeds):
    g = helper.make_graph(
        [node], "mm", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _run_ort(model, feeds):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _values(rng, shape):
    return (rng.integers(-128, 128, shape) * np.float32(rng.uniform(0.001, 10))).astype(np.float32)


# K = 6 products 2^24, 1, 1, 0, 1, 1 in one row: MLAS's M = 1 kernel 2^24 + 2, exact 2^24 + 4
_A = np.array([[2.0**24, 1.0, 1.0, 0.0, 1.0, 1.0]], np.float32)


def test_m1_matmul_and_profile_choice():
    b = np.ones((6, 1), np.float32)
    assert mlas.matmul_float(_A, b).ravel().tolist() == [2.0**24 + 2]
    for name in ("onnxruntime", "onnxruntime.fused", "onnxruntime.fused_s8"):
        assert profiles.get(name).kernel.float_matmul_sum is FloatSum.MLAS
    m = _model(helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": _A, "b": b})
    assert run_qdq_model(m, {"a": _A, "b": b}, "onnxruntime")["y"].ravel().tolist() == [2.0**24 + 2]
    assert run_qdq_model(m, {"a": _A, "b": b}, "onnx")["y"].ravel().tolist() == [2.0**24 + 4]


def test_gemm_with_one_row_adds_c_after_the_dot_product():
    # M = 1 with B transposed: the 8-lane dot product ((2^24 + 1) + (1 + 0)) + ((1 + 1) + 0) = 2^24 + 2, then
    # C = -2^24 is added: 2 (C first and one add at a time would give 4, the exact value is 4)
    b = np.ones((1, 6), np.float32)
    c = np.array([-(2.0**24)], np.float32)
    assert mlas.gemm_float(_A, b, c, trans_b=True).ravel().tolist() == [2.0]
    feeds = {"a": _A, "b": b, "c": c}
    got = _run_ort(_model(helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1), feeds), feeds)
    assert got.ravel().tolist() == [2.0]


@st.composite
def _matmuls(draw):
    batch = draw(st.sampled_from([(), (), (2,), (2, 3)]))
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    k = draw(st.integers(1, 40)) if draw(st.integers(0, 3)) else draw(st.integers(41, 300))
    b_batched = draw(st.booleans()) and bool(batch)
    return (*batch, m, k), ((*batch,) if b_batched else ()) + (k, n)


@given(_matmuls(), st.integers(0, 2**32 - 1))
def test_matmul_equals_onnxruntime(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = _values(rng, shapes[0]), _values(rng, shapes[1])
    feeds = {"a": a, "b": b}
    m = _model(helper.make_node("MatMul", ["a", "b"], ["y"]), feeds)
    got = _run_ort(m, feeds)
    np.testing.assert_array_equal(mlas.matmul_float(a, b), got)
    np.testing.assert_array_equal(run_qdq_model(m, feeds, "onnxruntime")["y"], got)


@given(st.integers(1, 6), st.integers(1, 300), st.integers(1, 8), st.booleans(), st.sampled_from(["n", "mn", "1n"]),
       st.integers(0, 2**32 - 1))
def test_gemm_equals_onnxruntime(m, k, n, trans_b, c_shape, seed):
    rng = np.random.default_rng(seed)
    a = _values(rng, (m, k))
    b = _values(rng, (n, k) if trans_b else (k, n))
    c = _values(rng, {"n": (n,), "mn": (m, n), "1n": (1, n)}[c_shape])
    feeds = {"a": a, "b": b, "c": c}
    mdl = _model(helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=int(trans_b)), feeds)
    got = _run_ort(mdl, feeds)
    np.testing.assert_array_equal(mlas.gemm_float(a, b, c, trans_b=trans_b), got)
    np.testing.assert_array_equal(run_qdq_model(mdl, feeds, "onnxruntime")["y"], got)
