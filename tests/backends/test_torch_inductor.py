"""torch variant ``int8.inductor``: the oneDNN int8 ops that Inductor lowers a PT2E graph to.

The variant calls ``onednn.qconv_prepack``/``qconv_pointwise.tensor`` and
``onednn.qlinear_prepack``/``qlinear_pointwise.tensor`` directly (compiling per example would take
seconds). ``test_compiled_graph_equals_direct_calls`` proves that is what a compiled PT2E-form graph
runs: one ``torch.compile``'d module (freezing on) holding a batch of cases, every output equal to
the direct call bit for bit, and the generated code calling the oneDNN q-kernels once per case.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qverify.backends import registry
from qverify.backends.base import OpCase
from qverify.errors import InputError

torch = pytest.importorskip("torch")

from qverify.backends.torch_backend import run_inductor_kernel  # noqa: E402
from qverify.conformance.runner import variants_by_name  # noqa: E402
from qverify.reference.kernels import conv_integer, matmul_integer, qlinear_conv, qlinear_matmul  # noqa: E402

BACKEND = registry.get("torch")
if "engine:inductor" not in BACKEND.availability().capabilities:
    pytest.skip(
        "this torch has no oneDNN int8 ops (engine:inductor not in the torch backend's capabilities)",
        allow_module_level=True,
    )

f32 = np.float32


@pytest.fixture(scope="module")
def variant():
    v = variants_by_name(BACKEND)["int8.inductor"]
    yield v
    BACKEND.close()


def test_variant_is_offered_with_its_profile(variant):
    assert variant.profile == "torch.inductor"
    assert variant.options == {"api": "int8", "engine": "inductor"}
    assert BACKEND.supports("QLinearConv", variant) and BACKEND.supports("QLinearMatMul", variant)
    assert not BACKEND.supports("QuantizeLinear", variant)
    c = BACKEND.case_constraints("QLinearConv", variant)
    assert c["qlinear_dtypes"] == (("uint8", "int8", "uint8"),) and "asymmetric" in c["note"]


def test_without_onednn_ops_the_row_is_skipped_with_the_reason(variant):
    """A torch without the oneDNN int8 ops: the variant's rows are skipped, saying why."""
    from dataclasses import replace

    from qverify.backends.torch_backend import TorchBackend
    from qverify.conformance.families import FAMILIES
    from qverify.conformance.runner import run_row
    from qverify.errors import BackendUnavailable

    bare = TorchBackend()
    av = BACKEND.availability()
    bare._availability = replace(av, capabilities=tuple(c for c in av.capabilities if c != "engine:inductor"))
    assert bare.supports("QLinearConv", variant)
    with pytest.raises(BackendUnavailable, match="no int8 engine 'inductor'"):
        bare.run_op(OpCase("QLinearConv", _conv_inputs(np.random.default_rng(0)), _CONV_ATTRS), variant)
    row = run_row(bare, variant, FAMILIES["QLinearConv"], examples=3, seed=0)
    assert row.status == "skipped" and "qconv_pointwise" in row.reason
    bare.close()


def test_model_level_refuses_the_inductor_engine(tmp_path):
    with pytest.raises(InputError, match="engine 'inductor' is not available"):
        BACKEND.open_model({"torch_int8": tmp_path}, options={"engine": "inductor"})


def _conv_inputs(rng, wz=0, x_dtype=np.uint8):
    x = rng.integers(0, 256, (1, 2, 5, 5)).astype(x_dtype)
    w = rng.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8)
    return [x, f32(0.05), x_dtype(3), w, f32(0.01), np.int8(wz), f32(0.4), np.uint8(7)]


_CONV_ATTRS = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}


def test_refuses_asymmetric_weights_and_other_dtypes():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="symmetric weights only"):
        run_inductor_kernel("QLinearConv", _conv_inputs(rng, wz=3), _CONV_ATTRS)
    a = rng.integers(0, 256, (2, 4)).astype(np.uint8)
    b = rng.integers(-128, 128, (4, 3)).astype(np.int8)
    with pytest.raises(InputError, match="symmetric weights only"):
        run_inductor_kernel("QLinearMatMul", [a, f32(0.1), np.uint8(0), b, f32(0.1), np.int8(-1), f32(1.0), np.uint8(0)], {})
    with pytest.raises(InputError, match="uint8 activations"):
        run_inductor_kernel("QLinearConv", _conv_inputs(rng, x_dtype=np.int8), _CONV_ATTRS)
    with pytest.raises(InputError, match="pads symmetrically"):
        run_inductor_kernel("QLinearConv", _conv_inputs(rng), {**_CONV_ATTRS, "pads": [0, 0, 1, 1]})


def test_runs_in_the_worker_and_matches_the_profile(variant):
    """Through the backend (worker process): a symmetric case equals the torch.inductor reference."""
    rng = np.random.default_rng(1)
    case = OpCase("QLinearConv", _conv_inputs(rng), _CONV_ATTRS)
    got = BACKEND.run_op(case, variant)
    want = qlinear_conv(*case.inputs, None, strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1,
                        profile="torch.inductor")
    np.testing.assert_array_equal(got, want)


# --- the requantization: two-step scaling, zero point before rounding -----------------------------


def _two_step(acc, sx, sw, sy, zy, bias=None):
    """oneDNN as measured: ``v = f32(f32(f32(acc)*sx)*sw) (+ f32 bias)``, ``sat(rne(f32(v*f32(1/sy)) + zy))``."""
    v = ((acc.astype(f32) * f32(sx)).astype(f32) * sw).astype(f32)
    if bias is not None:
        v = (v + bias).astype(f32)
    y = ((v * f32(f32(1) / f32(sy))).astype(f32) + f32(zy)).astype(f32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


_scales = st.floats(0.0009765625, 1.0, width=32)
_ratio = st.one_of(st.floats(0.3, 3.0), st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 24.0]))


@settings(max_examples=60)
@given(sx=_scales, sw=st.lists(_scales, min_size=4, max_size=4), ratio=_ratio, zx=st.integers(0, 255),
       zy=st.integers(0, 255), per_channel=st.booleans(), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_requantizes_in_two_steps(sx, sw, ratio, zx, zy, per_channel, with_bias, seed):
    """A 1x1 conv over all 256 activation codes (many near-ties): the runtime equals the two-step
    formula exactly, and so does the torch.inductor profile (Requantization.FLOAT_TWO_STEP_ZP_BEFORE)."""
    rng = np.random.default_rng(seed)
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    w = rng.integers(-128, 128, (4, 1, 1, 1)).astype(np.int8)
    ws = np.array(sw, f32) if per_channel else f32(sw[0])
    ys = f32(f32(sx) * f32(np.max(ws)) * f32(ratio))
    bias = rng.integers(-(2**12), 2**12, 4).astype(np.int32) if with_bias else None
    wz = np.zeros(4, np.int8) if per_channel else np.int8(0)
    inputs = [x, f32(sx), np.uint8(zx), w, ws, wz, ys, np.uint8(zy)] + ([bias] if with_bias else [])
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
    got = run_inductor_kernel("QLinearConv", inputs, attrs)
    acc = conv_integer(x, w, np.uint8(zx), wz, profile="onnx").astype(np.int64)
    wsb = np.broadcast_to(np.asarray(ws, f32), (4,)).reshape(1, 4, 1, 1)
    fb = None
    if with_bias:
        fb = (bias.astype(f32) * (f32(sx) * np.asarray(ws, f32)).astype(f32)).astype(f32).reshape(1, 4, 1, 1)
    np.testing.assert_array_equal(got, _two_step(acc, sx, wsb, ys, zy, fb))
    want = qlinear_conv(*inputs[:8], bias, strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1,
                        profile="torch.inductor")
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60)
@given(sa=_scales, sb=_scales, ratio=_ratio, za=st.integers(0, 255), zy=st.integers(0, 255),
       seed=st.integers(0, 2**16))
def test_linear_requantizes_in_two_steps(sa, sb, ratio, za, zy, seed):
    """k = 1 linear over all 256 activation codes: exact against the two-step formula and the
    torch.inductor profile."""
    rng = np.random.default_rng(seed)
    a = np.arange(256, dtype=np.uint8).reshape(256, 1)
    b = rng.integers(-128, 128, (1, 8)).astype(np.int8)
    ys = f32(f32(sa) * f32(sb) * f32(ratio))
    inputs = [a, f32(sa), np.uint8(za), b, f32(sb), np.int8(0), ys, np.uint8(zy)]
    got = run_inductor_kernel("QLinearMatMul", inputs, {})
    acc = matmul_integer(a, b, np.uint8(za), np.int8(0), profile="onnx").astype(np.int64)
    np.testing.assert_array_equal(got, _two_step(acc, sa, f32(sb), ys, zy))
    want = qlinear_matmul(*inputs, profile="torch.inductor")
    np.testing.assert_array_equal(got, want)


# --- the compiled PT2E graph runs exactly these calls ---------------------------------------------


def _compile_cases():
    """~16 cases: convs (bias or not, depthwise, strides, pads, dilations, per-tensor and per-channel
    weight scales) and linears (rank 2 and 3 activations), uint8 activations, symmetric int8 weights."""
    rng = np.random.default_rng(2026)
    convs = [  # (cin, cout, group, k, stride, pad, dil, h, w, bias, per_channel)
        (3, 4, 1, 3, 1, 1, 1, 6, 7, True, True),
        (3, 4, 1, 3, 2, 1, 1, 7, 6, False, True),
        (2, 5, 1, 1, 1, 0, 1, 4, 4, True, False),
        (4, 4, 4, 3, 1, 1, 1, 5, 5, True, True),  # depthwise
        (4, 8, 4, 3, 2, 0, 1, 7, 7, False, True),  # depthwise, multiplier 2
        (3, 2, 1, 2, 1, 1, 2, 6, 6, True, False),
        (2, 3, 1, 3, 2, 1, 2, 8, 5, False, False),
        (5, 3, 1, 1, 2, 1, 1, 5, 3, True, True),
        (3, 3, 3, 2, 1, 0, 2, 6, 6, False, True),  # depthwise, dilated
        (1, 6, 1, 3, 1, 0, 1, 3, 4, True, True),
    ]
    cases = []
    for cin, cout, g, k, s, p, d, h, w, with_bias, per_channel in convs:
        x = rng.integers(0, 256, (1, cin, h, w)).astype(np.uint8)
        wt = rng.integers(-128, 128, (cout, cin // g, k, k)).astype(np.int8)
        xs = f32(rng.uniform(0.005, 0.1))
        ws = rng.uniform(0.002, 0.05, cout).astype(f32) if per_channel else f32(rng.uniform(0.002, 0.05))
        ys = f32(xs * np.max(ws) * f32(rng.choice([4.0, 8.0, 16.0, 11.3])))
        inputs = [x, xs, np.uint8(rng.integers(0, 256)), wt, ws, np.zeros(cout, np.int8) if per_channel else np.int8(0),
                  ys, np.uint8(rng.integers(0, 256))]
        if with_bias:
            inputs.append(rng.integers(-(2**12), 2**12, cout).astype(np.int32))
        cases.append(OpCase("QLinearConv", inputs, {"strides": [s, s], "pads": [p] * 4, "dilations": [d, d], "group": g}))
    for shape, n in [((3, 7), 5), ((2, 3, 9), 4), ((1, 16), 8), ((4, 5), 1), ((2, 2, 12), 6), ((6, 3), 2)]:
        a = rng.integers(0, 256, shape).astype(np.uint8)
        b = rng.integers(-128, 128, (shape[-1], n)).astype(np.int8)
        sa, sb = f32(rng.uniform(0.005, 0.1)), f32(rng.uniform(0.002, 0.05))
        ys = f32(sa * sb * f32(rng.choice([4.0, 8.0, 6.1])))
        cases.append(OpCase("QLinearMatMul", [a, sa, np.uint8(rng.integers(0, 256)), b, sb, np.int8(0), ys,
                                              np.uint8(rng.integers(0, 256))], {}))
    return cases


class _PT2EGraph(torch.nn.Module):
    """The graph convert_pt2e makes with X86InductorQuantizer, one branch per case:
    dequantize_per_tensor(x) -> conv2d / linear(dequantize_per_channel(w), float bias) ->
    quantize_per_tensor. A per-tensor weight scale becomes equal channel scales (as the variant does)."""

    def __init__(self, cases):
        super().__init__()
        import torch.ao.quantization.fx._decomposed  # noqa: F401 - registers quantized_decomposed

        self.meta = []
        for i, case in enumerate(cases):
            conv = case.op == "QLinearConv"
            x, xs, xz, w, ws, _wz, ys, yz = case.inputs[:8]
            wt = w if conv else np.ascontiguousarray(w.T)
            n = wt.shape[0]
            scales = np.broadcast_to(np.asarray(ws, f32).reshape(-1), (n,)).astype(f32)
            self.register_buffer(f"w{i}", torch.from_numpy(wt.copy()))
            self.register_buffer(f"ws{i}", torch.from_numpy(scales))
            self.register_buffer(f"wz{i}", torch.zeros(n, dtype=torch.int64))
            bias = None
            if len(case.inputs) > 8 and case.inputs[8] is not None:
                bias = (case.inputs[8].astype(f32) * (f32(xs) * scales).astype(f32)).astype(f32)
                self.register_buffer(f"b{i}", torch.from_numpy(bias))
            self.meta.append((conv, float(xs), int(xz), float(ys), int(yz), bias is not None, dict(case.attrs)))

    def forward(self, *xs):
        qd = torch.ops.quantized_decomposed
        outs = []
        for i, (x, (conv, sx, zx, sy, zy, has_bias, attrs)) in enumerate(zip(xs, self.meta)):
            xf = qd.dequantize_per_tensor.default(x, sx, zx, 0, 255, torch.uint8)
            wf = qd.dequantize_per_channel.default(
                getattr(self, f"w{i}"), getattr(self, f"ws{i}"), getattr(self, f"wz{i}"), 0, -128, 127, torch.int8
            )
            b = getattr(self, f"b{i}") if has_bias else None
            if conv:
                y = torch.nn.functional.conv2d(xf, wf, b, attrs["strides"], attrs["pads"][:2], attrs["dilations"],
                                               attrs["group"])
            else:
                y = torch.nn.functional.linear(xf, wf, b)
            outs.append(qd.quantize_per_tensor.default(y, sy, zy, 0, 255, torch.uint8))
        return outs


@pytest.mark.slow
def test_compiled_graph_equals_direct_calls():
    """One compiled module (freezing on) holding every case: each output equals the variant's direct
    oneDNN call bit for bit, and the generated code calls onednn.qconv_pointwise / qlinear_pointwise
    once per conv / matmul case (no float fallback). The FX graph cache is off for this compile so
    the generated code is produced (and read) whether or not a cache is warm."""
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import run_and_get_code

    cases = _compile_cases()
    module = _PT2EGraph(cases).eval()
    feeds = [torch.from_numpy(c.inputs[0].copy()) for c in cases]
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with inductor_config.patch(freezing=True, fx_graph_cache=False, compile_threads=1), torch.no_grad():
            outs, codes = run_and_get_code(torch.compile(module), *feeds)
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    code = "\n".join(codes)
    n_conv = sum(c.op == "QLinearConv" for c in cases)
    n_lin = len(cases) - n_conv
    assert code.count("= torch.ops.onednn.qconv_pointwise.tensor(") == n_conv
    assert code.count("= torch.ops.onednn.qlinear_pointwise.tensor(") == n_lin
    assert "extern_kernels." not in code  # no float conv/mm fallback (extern_kernels.convolution / addmm)
    for case, out in zip(cases, outs):
        want = run_inductor_kernel(case.op, case.inputs, case.attrs)
        assert out.dtype == torch.uint8 and tuple(out.shape) == want.shape, case
        np.testing.assert_array_equal(out.contiguous().numpy(), want, err_msg=f"{case.op} {case.attrs}")
