"""onnxruntime's float AveragePool and ``KernelSemantics.float_average_pool_kernel_order``.

The last rows of the ORT conformance matrix explained only by a deviation were
``qdq_conv_avgpool/disabled`` (0.877 exact, seed 0): Conv -> Q -> DQ -> AveragePool -> Q with the pool in
float. onnxruntime 1.32 (MLAS pool, one thread) sums each window in float32 in kernel order and divides
by the count in float32; the reference took the exact mean rounded once. Probe (not a test): 300 random
2x2/stride-2 pools matched the kernel-order sum on all 300, the exact mean on 30. Dilated windows with
pads and count_include_pad=0 are divided by another count there (every element off), and with ceil_mode
onnxruntime's output shape differs from ONNX's in some cases: neither is drawn here (not modelled).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from qverify.reference import profiles
from qverify.reference.graph import run_qdq_model


def _pool_model(shape, **attrs):
    g = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "avgpool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def _run_ort(model, x, level):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_window_is_summed_in_kernel_order():
    # one 2x2 window 2^24, 1, 1, 1: kernel order 2^24 (each + 1 rounds to even) -> / 4 = 2^22; exact 2^22 + 0.75
    x = np.array([[2.0**24, 1.0], [1.0, 1.0]], np.float32).reshape(1, 1, 2, 2)
    m = _pool_model(x.shape, kernel_shape=[2, 2])
    assert profiles.get("onnxruntime").kernel.float_average_pool_kernel_order
    assert not profiles.get("onnx").kernel.float_average_pool_kernel_order
    assert run_qdq_model(m, {"x": x}, "onnxruntime")["y"].ravel().tolist() == [2.0**22]
    assert run_qdq_model(m, {"x": x}, "onnx")["y"].ravel().tolist() == [np.float32(2.0**22 + 0.75)]


@st.composite
def _pools(draw):
    nd = draw(st.sampled_from([2, 2, 2, 1, 3]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    strides = [draw(st.integers(1, 2)) for _ in range(nd)]
    cip = draw(st.integers(0, 1))
    dil = [draw(st.sampled_from([1, 1, 1, 2])) for _ in range(nd)]
    if max(dil) > 1 and not cip:
        pads = [0] * (2 * nd)  # onnxruntime divides these by another count (module docstring)
    else:
        pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    spatial = [draw(st.integers(max(1, dil[i] * (kernel[i] - 1) + 1 - 2 * pads[i]), 9)) for i in range(nd)]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *spatial)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, count_include_pad=cip)
    if max(dil) > 1:
        attrs["dilations"] = dil
    return shape, attrs


@given(_pools(), st.integers(0, 2**32 - 1), st.sampled_from(["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"]))
def test_float_average_pool_equals_onnxruntime(pool, seed, level):
    shape, attrs = pool
    rng = np.random.default_rng(seed)
    x = (rng.integers(-128, 128, shape) * np.float32(rng.uniform(0.001, 100))).astype(np.float32)
    m = _pool_model(shape, **attrs)
    got = _run_ort(m, x, level)
    for name in ("onnxruntime", "onnxruntime.fused"):  # (a lone float pool: no QDQ to fuse)
        np.testing.assert_array_equal(run_qdq_model(m, {"x": x}, name)["y"], got)


def test_exact_mean_is_what_differs():
    """The same case under the flag off: the reference then takes the exact mean (the old behaviour)."""
    x = np.array([[2.0**24, 1.0], [1.0, 1.0]], np.float32).reshape(1, 1, 2, 2)
    p = profiles.get("onnxruntime")
    off = dataclasses.replace(p, name="onnxruntime-exact-pool",
                              kernel=dataclasses.replace(p.kernel, float_average_pool_kernel_order=False))
    m = _pool_model(x.shape, kernel_shape=[2, 2])
    assert run_qdq_model(m, {"x": x}, off)["y"].ravel().tolist() == [np.float32(2.0**22 + 0.75)]
