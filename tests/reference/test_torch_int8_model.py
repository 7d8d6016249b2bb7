"""The ``torch.x86`` profile against torch's eager x86 int8 engine (what ``qverify.quantizer.
torch_int8`` runs): the global average pool that keeps its input's parameters, and a zoo model
layer by layer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qverify.reference import kernels as K
from qverify.reference import profiles


@pytest.fixture(scope="module")
def torch():
    t = pytest.importorskip("torch", reason="torch not installed: pip install 'qverify[torch]'")
    if "x86" not in t.backends.quantized.supported_engines:
        pytest.skip(f"torch's x86 quantized engine is not built in ({t.backends.quantized.supported_engines})")
    old = t.backends.quantized.engine
    t.backends.quantized.engine = "x86"
    yield t
    t.backends.quantized.engine = old


def _torch_gap(torch, codes: np.ndarray, scale: float, zp: int) -> tuple[np.ndarray, float, int]:
    import torch.nn.functional as F

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13: quantized tensors are deprecated
        q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), scale, zp)
        q = q.contiguous(memory_format=torch.channels_last)  # what the int8 conv modules return
        y = F.adaptive_avg_pool2d(q, 1)
        return y.int_repr().numpy(), y.q_scale(), y.q_zero_point()


def test_profile_is_named():
    sem = profiles.get("torch.x86").kernel
    assert sem.fuse_qdq and sem.fuse_qdq_global_average_pool and sem.global_average_pool_keeps_input_params
    assert not profiles.get("onnxruntime.fused").kernel.global_average_pool_keeps_input_params


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 24),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    scale=st.floats(1e-4, 1.0).map(lambda s: float(np.float32(s))),
    zp=st.integers(0, 255),
    seed=st.integers(0, 2**32 - 1),
    tie_heavy=st.booleans(),
)
def test_global_average_pool_keep_params_matches_torch(torch, n, c, h, w, scale, zp, seed, tie_heavy):
    rng = np.random.default_rng(seed)
    if tie_heavy:  # codes near the zero point: many sums that are k + 1/2 of the window size
        codes = np.clip(zp + rng.integers(-2, 3, (n, c, h, w)), 0, 255).astype(np.uint8)
    else:
        codes = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    got, s_out, z_out = _torch_gap(torch, codes, scale, zp)
    assert (s_out, z_out) == (scale, zp)  # the pool keeps its input's parameters
    np.testing.assert_array_equal(K.global_average_pool_keep_params(codes, np.float32(scale), np.uint8(zp)), got)


def test_keep_params_differs_from_exact_average_on_a_tie(torch):
    # window of 2, acc = 1 after the zero point: 0.5 rounds to even (0) with the zero point added
    # inside the FMA at zp 3: rne(0.5 + 3) = 4, whereas rne(0.5) + 3 = 3
    codes = np.array([[[[3, 4]]]], np.uint8)
    got, _, _ = _torch_gap(torch, codes, 0.1, 3)
    ours = K.global_average_pool_keep_params(codes, np.float32(0.1), np.uint8(3))
    np.testing.assert_array_equal(ours, got)
    assert int(ours.ravel()[0]) == 4


@given(
    cin=st.integers(1, 8),
    mult=st.integers(1, 2),
    depthwise=st.booleans(),
    k=st.integers(1, 3),
    pad=st.integers(0, 1),
    per_channel=st.booleans(),
    with_bias=st.booleans(),
    pow2=st.booleans(),
    zx=st.integers(0, 255),
    zy=st.integers(0, 255),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_requantization_matches_torch(torch, cin, mult, depthwise, k, pad, per_channel, with_bias, pow2,
                                           zx, zy, seed):
    """qlinear_conv under torch.x86 (Requantization.FLOAT_TWO_STEP_ZP_BEFORE with the source-scale
    round trip, for conv) against
    torch.ao.nn.quantized.Conv2d given the int32 bias dequantized, f32(bq * f32(sx*sw)); pow2
    scales make requantization ties frequent."""
    import torch.ao.nn.quantized as nnq

    rng = np.random.default_rng(seed)
    f = np.float32
    group = cin if depthwise else 1
    cout = cin * mult if depthwise else int(rng.integers(1, 9))
    h = k + int(rng.integers(0, 5))
    if pow2:
        sx, sy = f(2.0 ** rng.integers(-8, -3)), f(2.0 ** rng.integers(-6, -1))
        sw = (2.0 ** rng.integers(-9, -5, cout if per_channel else 1)).astype(f)
    else:
        sx, sy = f(rng.uniform(0.005, 0.05)), f(rng.uniform(0.01, 0.2))
        sw = rng.uniform(0.001, 0.02, cout if per_channel else 1).astype(f)
    xc = rng.integers(0, 256, (2, cin, h, h)).astype(np.uint8)
    wq = rng.integers(-128, 128, (cout, cin // group, k, k)).astype(np.int8)
    bq = rng.integers(-3000, 3000, cout).astype(np.int32) if with_bias else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13: quantized tensors are deprecated
        m = nnq.Conv2d(cin, cout, k, padding=pad, groups=group, bias=with_bias)
        if per_channel:
            wt = torch._make_per_channel_quantized_tensor(
                torch.from_numpy(wq), torch.tensor(sw.astype(np.float64)), torch.zeros(cout, dtype=torch.int64), 0
            )
        else:
            wt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(wq), float(sw[0]), 0)
        b = None if bq is None else torch.from_numpy((bq.astype(f) * (sx * sw).astype(f)).astype(f))
        m.set_weight_bias(wt, b)
        m.scale, m.zero_point = float(sy), zy
        xt = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xc), float(sx), zx)
        got = m(xt).int_repr().numpy()
    want = K.qlinear_conv(
        xc, sx, np.uint8(zx), wq, sw if per_channel else sw[0], np.int8(0), sy, np.uint8(zy), bq,
        pads=[pad] * 4, group=group, profile="torch.x86",
    )
    np.testing.assert_array_equal(want, got)


@pytest.mark.parametrize(
    "zoo_name, kinds",
    [("mobilenet-digits", {"Conv", "Gemm", "GlobalAveragePool"}), ("cnn-digits", {"Conv", "Gemm", "AveragePool"})],
)
def test_zoo_model_per_layer(torch, tmp_path, zoo_name, kinds):
    """Each int8 layer of a zoo model, fed the reference's own input codes, against the
    reference under torch.x86, bit-exact, with each module given the bias the QDQ model deploys,
    f32(bq * f32(sx*sw)). (torch_int8's loader hands over the unrounded float bias instead, which
    moves a conv code by 1 next to a tie: qverify/deviations/torch.toml.)"""
    import onnx
    import torch.nn.functional as F

    from qverify import zoo
    from qverify.quantizer import quantize_ptq
    from qverify.quantizer.config import QuantConfig
    from qverify.quantizer.torch_int8 import load_torch_int8, quiet_quantized_tensors
    from qverify.reference.graph import run_qdq_model

    zm = zoo.get(zoo_name, n_calib=32, n_eval=16)
    files = quantize_ptq(zm, zm.calib, QuantConfig()).export(tmp_path, formats=["onnx_qdq", "torch_int8"])
    model = onnx.load(str(files["onnx_qdq"]))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    ref = run_qdq_model(model, {"input": zm.eval_x}, "torch.x86", intermediates=True)
    tm = load_torch_int8(files["torch_int8"])
    producer = {n.output[0]: n for n in model.graph.node}
    with quiet_quantized_tensors():
        for node in model.graph.node:
            if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
                name = node.output[0]
                sx = np.float32(inits[producer[node.input[0]].input[1]])
                sw = inits[f"{name}.weight_scale"].astype(np.float32)
                b = (inits[f"{name}.bias_quantized"].astype(np.float32) * (sx * sw).astype(np.float32)).astype(np.float32)
                mod = tm.mods[name.replace(".", "_")]
                mod.set_weight_bias(mod.weight(), torch.from_numpy(b))

    def qin(tensor_dq: str):
        """The quantized tensor feeding a node (its input DequantizeLinear's codes)."""
        dq = producer[tensor_dq]
        codes, s, z = ref[dq.input[0]], float(inits[dq.input[1]]), int(inits[dq.input[2]])
        return torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), s, z)

    seen = set()
    with quiet_quantized_tensors():
        for node in model.graph.node:
            if node.op_type not in ("Conv", "Gemm", "GlobalAveragePool", "AveragePool"):
                continue
            name = node.output[0]
            x = qin(node.input[0])
            if node.op_type == "GlobalAveragePool":
                y = F.adaptive_avg_pool2d(x.contiguous(memory_format=torch.channels_last), 1)
            elif node.op_type == "AveragePool":
                a = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
                y = F.avg_pool2d(x.contiguous(memory_format=torch.channels_last), a["kernel_shape"],
                                 a.get("strides", 1), a.get("pads", [0, 0])[:2], count_include_pad=True)
            else:
                y = tm.mods[name.replace(".", "_")](x.reshape(x.shape[0], -1) if node.op_type == "Gemm" else x)
            s, z = float(inits[f"{name}_scale"]), int(inits[f"{name}_zero_point"])
            if (y.q_scale(), y.q_zero_point()) != (s, z):  # as the torch_int8 loader moves it
                y = torch.quantize_per_tensor(y.dequantize(), s, z, torch.quint8)
            got = y.int_repr().numpy().astype(np.int64).reshape(-1)
            want = ref[f"{name}_quantized"].astype(np.int64).reshape(-1)
            np.testing.assert_array_equal(got, want, err_msg=name)
            seen.add(node.op_type)
    assert seen == kinds


@given(
    c=st.integers(1, 40),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    extra=st.integers(0, 5),
    scale=st.floats(1e-4, 1.0).map(lambda s: float(np.float32(s))),
    zp=st.integers(0, 255),
    seed=st.integers(0, 2**32 - 1),
)
def test_average_pool_keep_params_matches_torch(torch, c, k, stride, pad, extra, scale, zp, seed):
    """torch's quantized avg_pool2d (count_include_pad, channels-last): the vectorised channels
    (blocks of 16) round then add the zero point, the rest add it inside one FMA."""
    import torch.nn.functional as F

    pad = min(pad, k // 2)
    h = k + extra
    codes = np.random.default_rng(seed).integers(0, 256, (2, c, h, h)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch 2.13: quantized tensors are deprecated
        q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), scale, zp)
        q = q.contiguous(memory_format=torch.channels_last)
        y = F.avg_pool2d(q, k, stride, pad, count_include_pad=True)
        got = y.int_repr().numpy()
    assert (y.q_scale(), y.q_zero_point()) == (scale, zp)
    want = K.average_pool_keep_params(codes, np.float32(scale), np.uint8(zp), (k, k), (stride, stride), [pad] * 4)
    np.testing.assert_array_equal(want, got)


def test_int8_activation_pools_stay_float(tmp_path):
    """torch's int8 kernels take quint8 activations only: with int8 activations (the TensorRT form,
    which torch runs as its fake-quant simulation) torch.x86 fuses no pool and computes what
    torch.quantize computes on the float path."""
    import onnx

    from qverify import zoo
    from qverify.quantizer import quantize_ptq
    from qverify.quantizer.config import QuantConfig
    from qverify.reference.graph import run_qdq_model

    zm = zoo.get("cnn-digits", n_calib=32, n_eval=32)
    cfg = QuantConfig(activation_symmetric=True, activation_dtype="int8")
    files = quantize_ptq(zm, zm.calib, cfg).export(tmp_path, formats=["onnx_qdq"])
    model = onnx.load(str(files["onnx_qdq"]))
    assert any(n.op_type == "AveragePool" for n in model.graph.node)
    x86 = run_qdq_model(model, {"input": zm.eval_x}, "torch.x86")["output"]
    plain = run_qdq_model(model, {"input": zm.eval_x}, "torch.quantize")["output"]
    np.testing.assert_array_equal(x86, plain)
