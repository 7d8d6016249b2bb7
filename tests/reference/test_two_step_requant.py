"""``Requantization.FLOAT_TWO_STEP_ZP_BEFORE``: oneDNN's int8 conv/matmul requantization.

oneDNN's brgemm post-ops (uxlfoundation/oneDNN ``src/cpu/x64/jit_brgemm_post_ops.cpp``) scale the
float32 accumulator by the source scale, then by the weight scale, add the float bias, multiply by
the destination scale's reciprocal and add the zero point before the saturating conversion. Profile
``torch.inductor`` (PT2E/Inductor's ``onednn.qconv_pointwise`` / ``qlinear_pointwise``) uses it for
conv and matmul. The pure-NumPy tests pin the formula on a hand case where the one-multiplier form
(``FLOAT_BIAS_ZP_BEFORE``) rounds the other way; the torch tests run the oneDNN ops through the torch
backend on tie-heavy draws and match the profile bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qverify.reference import kernels as K
from qverify.reference.graph import run_qdq_model
from qverify.reference.semantics import KernelSemantics, Requantization

f32 = np.float32
TWO = Requantization.FLOAT_TWO_STEP_ZP_BEFORE
ONE = Requantization.FLOAT_BIAS_ZP_BEFORE
TWO_SEM = KernelSemantics(requantization=TWO, conv_requantization=TWO)
ONE_SEM = KernelSemantics(requantization=ONE, conv_requantization=ONE)

# hand case: acc = (193 - 0) * (-15) = -2895, sx = sw = f32(0.1), sy = f32(0.3), zy = 128 (uint8)
SX, SW, SY, ZY = f32(0.1), f32(0.1), f32(0.3), 128


def test_hand_case_steps():
    """The two orders of the same three scales, step by step (every value exact in float32)."""
    acc = f32(-2895)
    inv = f32(f32(1) / SY)
    assert inv == float.fromhex("0x1.aaaaaap+1")
    # two steps: f32(acc*sx) = -289.5, then * sw, then * f32(1/sy) lands exactly on the tie -96.5
    s1 = f32(acc * SX)
    assert s1 == -289.5
    v = f32(s1 * SW)
    assert v == float.fromhex("-0x1.cf3334p+4")
    assert f32(v * inv) == -96.5
    assert f32(f32(v * inv) + f32(ZY)) == 31.5  # rne -> 32
    # one step: f32(sx*sw) first; the product lands just below the tie
    p = f32(SX * SW)
    assert p == float.fromhex("0x1.47ae16p-7")
    y1 = f32(f32(acc * p) * inv)
    assert y1 == float.fromhex("-0x1.820002p+6")
    assert f32(y1 + f32(ZY)) == float.fromhex("0x1.f7fff8p+4")  # 31.4999924 -> 31


def _hand_matmul_args():
    a = np.array([[193]], np.uint8)
    b = np.array([[-15]], np.int8)
    return a, SX, np.uint8(0), b, SW, np.int8(0), SY, np.uint8(ZY)


def _hand_conv_args(per_channel: bool):
    x = np.full((1, 1, 1, 1), 193, np.uint8)
    w = np.full((2, 1, 1, 1), -15, np.int8)
    ws = np.array([SW, SW], f32) if per_channel else SW
    wz = np.zeros(2, np.int8) if per_channel else np.int8(0)
    return x, SX, np.uint8(0), w, ws, wz, SY, np.uint8(ZY)


def test_hand_case_matmul():
    args = _hand_matmul_args()
    assert K.qlinear_matmul(*args, profile=TWO_SEM)[0, 0] == 32
    assert K.qlinear_matmul(*args, profile="torch.inductor")[0, 0] == 32
    assert K.qlinear_matmul(*args, profile=ONE_SEM)[0, 0] == 31


@pytest.mark.parametrize("per_channel", [False, True])
def test_hand_case_conv(per_channel):
    args = _hand_conv_args(per_channel)
    assert K.qlinear_conv(*args, profile=TWO_SEM).ravel().tolist() == [32, 32]
    assert K.qlinear_conv(*args, profile="torch.inductor").ravel().tolist() == [32, 32]
    assert K.qlinear_conv(*args, profile=ONE_SEM).ravel().tolist() == [31, 31]
    # a zero bias is added as f32(0 * f32(sx*sw)) = 0: nothing moves
    zero = np.zeros(2, np.int32)
    assert K.qlinear_conv(*args, zero, profile=TWO_SEM).ravel().tolist() == [32, 32]


def test_bias_enters_after_both_scales():
    """acc 0, bias b: v = f32(0) + f32(b * f32(sx*sw)), so y = rne(f32(f32(b*p) * f32(1/sy)) + zy)."""
    x = np.zeros((1, 1, 1, 1), np.uint8)
    w = np.ones((3, 1, 1, 1), np.int8)
    bias = np.array([-2895, 1000, 7], np.int32)
    got = K.qlinear_conv(x, SX, np.uint8(0), w, SW, np.int8(0), SY, np.uint8(ZY), bias, profile=TWO_SEM)
    p = f32(SX * SW)
    want = np.rint((((bias.astype(f32) * p).astype(f32) * f32(f32(1) / SY)).astype(f32) + f32(ZY)).astype(f32))
    np.testing.assert_array_equal(got.ravel(), np.clip(want, 0, 255).astype(np.uint8))
    assert got.ravel()[0] == 31  # the bias path is the one-multiplier form: 31.4999924 -> 31


def test_requantize_with_one_multiplier_is_the_float_bias_form():
    """Given M alone (sx = M, sw = sy = 1, no bias) both forms are rne(f32(f32(acc)*M) + zp)."""
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**20), 2**20, 500).astype(np.int32)
    m = f32(0.0123)
    a = K.requantize(acc, m, 3, mode=TWO, dtype="int8")
    b = K.requantize(acc, m, 3, mode=ONE, dtype="int8")
    np.testing.assert_array_equal(a, b)
    want = np.clip(np.rint((acc.astype(f32) * m).astype(f32) + f32(3)), -128, 127)
    np.testing.assert_array_equal(a, want)


def _gemm_model(ws: np.ndarray, bq: np.ndarray, w: np.ndarray) -> onnx.ModelProto:
    """x -> Q/DQ -> Gemm(transB=1, DQ(w per output row), DQ(int32 bias)) -> Q -> DQ -> y."""
    n, k = w.shape
    inits = [
        numpy_helper.from_array(np.array(SX, f32), "x_s"), numpy_helper.from_array(np.array(3, np.uint8), "x_z"),
        numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(ws, "w_s"),
        numpy_helper.from_array(np.zeros(n, np.int8), "w_z"),
        numpy_helper.from_array(bq, "b_q"), numpy_helper.from_array((SX * ws).astype(f32), "b_s"),
        numpy_helper.from_array(np.zeros(n, np.int32), "b_z"),
        numpy_helper.from_array(np.array(SY, f32), "y_s"), numpy_helper.from_array(np.array(ZY, np.uint8), "y_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b"], axis=0),
        helper.make_node("Gemm", ["x_dq", "w", "b"], ["c"], transB=1),
        helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "y_s", "y_z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_fused_gemm_dispatches_to_the_two_step_form():
    """graph: a fused DQ -> Gemm(+bias) -> Q under a two-step profile equals the 1x1 QLinearConv of the
    same codes (the conv path adds the bias as f32(b * f32(sx*sw)) after both scales too)."""
    import dataclasses

    from qverify.reference import profiles

    base = profiles.get("torch.x86")
    prof = dataclasses.replace(
        base, name="two-step-gemm",
        kernel=dataclasses.replace(base.kernel, requantization=TWO, conv_requantization=TWO,
                                   conv_source_scale_round_trip=False),
    )
    rng = np.random.default_rng(3)
    n, k = 6, 5
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    ws = rng.uniform(0.002, 0.2, n).astype(f32)
    bq = rng.integers(-3000, 3000, n).astype(np.int32)
    x = rng.normal(0, 2, (40, k)).astype(f32)
    out = run_qdq_model(_gemm_model(ws, bq, w), {"x": x}, prof, intermediates=True)
    xq = out["x_q"]
    want = K.qlinear_conv(
        xq.reshape(40, k, 1, 1), SX, np.uint8(3), w.reshape(n, k, 1, 1), ws, np.zeros(n, np.int8), SY,
        np.uint8(ZY), bq, profile=prof,
    ).reshape(40, n)
    np.testing.assert_array_equal(out["c_q"], want)


# --- against the runtime: torch's oneDNN ops through the torch backend (variant int8.inductor) ------


def _torch_backend():
    pytest.importorskip("torch")
    from qverify.backends import registry

    backend = registry.get("torch")
    if "engine:inductor" not in backend.availability().capabilities:
        pytest.skip("this torch has no oneDNN int8 ops (torch.ops.onednn.qconv_pointwise / qlinear_pointwise)")
    return backend


@pytest.fixture(scope="module")
def inductor():
    from qverify.conformance.runner import variants_by_name

    backend = _torch_backend()
    yield backend, variants_by_name(backend)["int8.inductor"]
    backend.close()


_CONV1 = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}


def test_runtime_rounds_the_hand_case_as_two_steps(inductor):
    from qverify.backends.base import OpCase

    backend, variant = inductor
    got = backend.run_op(OpCase("QLinearMatMul", list(_hand_matmul_args()), {}), variant)
    assert got[0, 0] == 32  # the one-multiplier form says 31
    for per_channel in (False, True):
        got = backend.run_op(OpCase("QLinearConv", list(_hand_conv_args(per_channel)), _CONV1), variant)
        assert got.ravel().tolist() == [32, 32]


# scales drawn from the seed (uniform in [2^-10, 1)): Hypothesis' own float draws favour simple values
# (powers of two), on which the one-multiplier and the two-step forms agree
def _scales_from(rng, n):
    return rng.uniform(2.0**-10, 1.0, n).astype(f32)


# y scale = sx * max(sw) * ratio: simple ratios put many outputs on or next to a tie
_ratio = st.one_of(st.floats(0.25, 3.0), st.sampled_from([0.5, 0.75, 1.0, 1.5, 3.0, 6.0, 12.0, 24.0]))


@settings(max_examples=100, deadline=None)
@given(ratio=_ratio, zx=st.integers(0, 255), zy=st.integers(0, 255), per_channel=st.booleans(),
       with_bias=st.booleans(), k=st.sampled_from([1, 3]), seed=st.integers(0, 2**32 - 1))
def test_conv_matches_the_profile_on_tie_heavy_draws(inductor, ratio, zx, zy, per_channel, with_bias, k, seed):
    """1x1 convs over all 256 activation codes (k = 1) and 3x3 convs over 3 channels (k = 3)."""
    from qverify.backends.base import OpCase

    backend, variant = inductor
    rng = np.random.default_rng(seed)
    sx, sw = _scales_from(rng, 1)[0], _scales_from(rng, 4)
    if k == 1:
        x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
        w = rng.integers(-128, 128, (4, 1, 1, 1)).astype(np.int8)
        attrs = _CONV1
    else:
        x = rng.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)
        w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
        attrs = {**_CONV1, "pads": [1, 1, 1, 1]}
        ratio = f32(ratio * 16)
    ws = np.array(sw, f32) if per_channel else f32(sw[0])
    ys = f32(f32(sx) * f32(np.max(ws)) * f32(ratio))
    wz = np.zeros(4, np.int8) if per_channel else np.int8(0)
    bias = rng.integers(-(2**12), 2**12, 4).astype(np.int32) if with_bias else None
    inputs = [x, f32(sx), np.uint8(zx), w, ws, wz, ys, np.uint8(zy)] + ([bias] if with_bias else [])
    got = backend.run_op(OpCase("QLinearConv", inputs, attrs), variant)
    want = K.qlinear_conv(*inputs[:8], bias, strides=attrs["strides"], pads=attrs["pads"], profile="torch.inductor")
    np.testing.assert_array_equal(got, want)


@settings(max_examples=100, deadline=None)
@given(ratio=_ratio, za=st.integers(0, 255), zy=st.integers(0, 255), per_channel=st.booleans(),
       k=st.sampled_from([1, 4]), seed=st.integers(0, 2**32 - 1))
def test_linear_matches_the_profile_on_tie_heavy_draws(inductor, ratio, za, zy, per_channel, k, seed):
    """Linear layers over all 256 activation codes (k = 1) or 256 random rows of length 4."""
    from qverify.backends.base import OpCase

    backend, variant = inductor
    rng = np.random.default_rng(seed)
    sa, sb = _scales_from(rng, 1)[0], _scales_from(rng, 8)
    a = np.arange(256, dtype=np.uint8).reshape(256, 1) if k == 1 else rng.integers(0, 256, (256, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, 8)).astype(np.int8)
    bs = np.array(sb, f32) if per_channel else f32(sb[0])
    ys = f32(f32(sa) * f32(np.max(bs)) * f32(ratio * k))
    bz = np.zeros(8, np.int8) if per_channel else np.int8(0)
    inputs = [a, f32(sa), np.uint8(za), b, bs, bz, ys, np.uint8(zy)]
    got = backend.run_op(OpCase("QLinearMatMul", inputs, {}), variant)
    np.testing.assert_array_equal(got, K.qlinear_matmul(*inputs, profile="torch.inductor"))


# --- torch's eager x86 conv (variant int8.x86, profile torch.x86): the same post-ops, with the source
# scale round-tripped through the 1/sx that torch hands ideep (KernelSemantics.conv_source_scale_round_trip)


def test_source_scale_round_trip_hand_case():
    """sx = f32(0.015): 1/sx in float64 rounds to f32 0x1.0aaaacp+6, whose float32 inverse is the float just
    below sx; with x code 3, w 1, sw 1, sy = f32(0.006) the plain two-step form lands on the tie 7.5
    (-> 8) and the round-tripped one just below it (-> 7)."""
    sx, sy = f32(0.015), f32(0.006)
    r = f32(1.0 / np.float64(sx))
    assert r == float.fromhex("0x1.0aaaacp+6")
    back = f32(f32(1) / r)
    assert back == float.fromhex("0x1.eb851cp-7") and back < sx
    inv = f32(f32(1) / sy)
    assert f32(f32(f32(3) * sx) * inv) == 7.5
    assert f32(f32(f32(3) * back) * inv) == float.fromhex("0x1.dffffep+2")
    plain = KernelSemantics(conv_requantization=TWO)
    rt = KernelSemantics(conv_requantization=TWO, conv_source_scale_round_trip=True)
    args = (np.full((1, 1, 1, 1), 3, np.uint8), sx, np.uint8(0), np.ones((1, 1, 1, 1), np.int8), f32(1), np.int8(0),
            sy, np.uint8(0))
    assert K.qlinear_conv(*args, profile=plain).item() == 8
    assert K.qlinear_conv(*args, profile=rt).item() == 7
    assert K.qlinear_conv(*args, profile="torch.x86").item() == 7


@pytest.fixture(scope="module")
def x86():
    pytest.importorskip("torch")
    from qverify.backends import registry
    from qverify.conformance.runner import variants_by_name

    backend = registry.get("torch")
    if "engine:x86" not in backend.availability().capabilities:
        pytest.skip("this torch has no x86 quantized engine")
    yield backend, variants_by_name(backend)["int8.x86"]
    backend.close()


@settings(max_examples=100, deadline=None)
@given(ratio=_ratio, zx=st.integers(0, 255), zy=st.integers(0, 255), per_channel=st.booleans(),
       with_bias=st.booleans(), k=st.sampled_from([1, 3]), seed=st.integers(0, 2**32 - 1))
def test_x86_conv_matches_the_profile_on_tie_heavy_draws(x86, ratio, zx, zy, per_channel, with_bias, k, seed):
    """Symmetric weights (oneDNN's brgemm convs): 1x1 convs over all 256 codes, 3x3 over 3 channels."""
    from qverify.backends.base import OpCase

    backend, variant = x86
    rng = np.random.default_rng(seed)
    sx, sw = _scales_from(rng, 1)[0], _scales_from(rng, 4)
    if k == 1:
        x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
        w = rng.integers(-128, 128, (4, 1, 1, 1)).astype(np.int8)
        attrs = _CONV1
    else:
        x = rng.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)
        w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
        attrs = {**_CONV1, "pads": [1, 1, 1, 1]}
        ratio = f32(ratio * 16)
    ws = sw if per_channel else f32(sw[0])
    ys = f32(f32(sx) * f32(np.max(ws)) * f32(ratio))
    wz = np.zeros(4, np.int8) if per_channel else np.int8(0)
    bias = rng.integers(-(2**12), 2**12, 4).astype(np.int32) if with_bias else None
    inputs = [x, f32(sx), np.uint8(zx), w, ws, wz, ys, np.uint8(zy)] + ([bias] if with_bias else [])
    got = backend.run_op(OpCase("QLinearConv", inputs, attrs), variant)
    want = K.qlinear_conv(*inputs[:8], bias, strides=attrs["strides"], pads=attrs["pads"], profile="torch.x86")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant_name", ["int8.x86", "int8.inductor"])
def test_gemm_convolution_is_within_the_declared_lsb(variant_name):
    """oneDNN runs some grouped convs with one input channel per group and a channel multiplier above 1
    on its gemm convolution (2 groups, multiplier 2, 3x3 kernel, 8x8 input here), whose post-ops use one
    f32(sx*sw): within 1 LSB of the two-step profile (deviation torch/QLinearConv/int8.[xi]* in
    qverify/deviations/torch.toml), and not always exact."""
    from qverify.backends.base import OpCase
    from qverify.conformance.runner import variants_by_name

    backend = _torch_backend()
    variant = variants_by_name(backend)[variant_name]
    rng = np.random.default_rng(0)
    differ = 0
    for i in range(60):
        x = np.stack([rng.permutation(256).astype(np.uint8)[:64].reshape(8, 8) for _ in range(2)])[None]
        w = np.zeros((4, 1, 3, 3), np.int8)
        w[:, 0, 1, 1] = rng.integers(-128, 128, 4)  # one tap: every output is one product, many near ties
        sx, ws = _scales_from(rng, 2)  # per-tensor weights
        sy = f32(sx * ws * f32(rng.choice([rng.uniform(0.3, 3.0), 0.75, 1.5, 3.0, 6.0])))
        inputs = [x, sx, np.uint8(rng.integers(0, 256)), w, ws, np.int8(0), sy, np.uint8(rng.integers(0, 256))]
        if i % 2:
            inputs.append(rng.integers(-(2**12), 2**12, 4).astype(np.int32))
        attrs = {**_CONV1, "pads": [1, 1, 1, 1], "group": 2}
        got = backend.run_op(OpCase("QLinearConv", inputs, attrs), variant).astype(int)
        want = K.qlinear_conv(*inputs, pads=[1, 1, 1, 1], group=2, profile=variant.profile).astype(int)
        assert np.abs(got - want).max() <= 1
        differ += int(not np.array_equal(got, want))
    assert differ > 0
    backend.close()
