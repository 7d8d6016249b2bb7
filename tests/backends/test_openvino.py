"""The OpenVINO adapter, and the runtime facts behind the `openvino` profile and its deviations
(openvino 2026.4 CPU plugin, INFERENCE_PRECISION_HINT=f32).

Each fact test runs the real runtime and names what it shows; the generic differential rows
(tests/conformance/test_differential.py) cover the drawn cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from qverify.backends import registry
from qverify.backends.base import OpCase
from qverify.errors import InputError, ModelError
from qverify.reference.quantize import fake_quantize_range, fma_f32

ov = pytest.importorskip("openvino", reason="openvino not installed: pip install 'qverify[openvino]'")

F32 = np.float32


@pytest.fixture(scope="module")
def backend():
    b = registry.get("openvino")
    if not b.availability().available:
        pytest.skip(b.availability().reason)
    return b


@pytest.fixture(scope="module")
def cpu(backend):
    return backend.variants()[0]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_availability_and_the_cpu_default_precision(backend):
    """The CPU plugin defaults to bf16 inference precision on AVX-512 BF16 CPUs: the adapter says
    so and compiles with f32 instead."""
    av = backend.availability()
    assert av.available and av.version.startswith("2026.")
    default = backend.cpu_default_precision()
    if "avx512_bf16" in _cpu_flags() or "amx_bf16" in _cpu_flags():
        assert default == "bf16"
    assert backend.variants()[0].options["precision"] == "f32"


def _fq_model(il, ih, ol, oh, levels, ranges_as_inputs: bool, n: int = -1):
    from openvino import opset13 as ops

    x = ops.parameter([n], ov.Type.f32, name="x")
    if ranges_as_inputs:
        params = [ops.parameter([], ov.Type.f32, name=n) for n in ("il", "ih", "ol", "oh")]
        return ov.Model([ops.fake_quantize(x, *params, levels).output(0)], [x, *params])
    consts = [ops.constant(np.asarray(v, F32)) for v in (il, ih, ol, oh)]
    return ov.Model([ops.fake_quantize(x, *consts, levels).output(0)], [x])


def _compile(model):
    from qverify.backends.openvino_backend import compile_config

    return ov.Core().compile_model(model, "CPU", compile_config())


def test_parameter_form_differs_from_constant_form():
    """Ranges fed as inputs take another CPU code path than constant ranges (the deployed form), so
    the adapter compiles constants; this is why it cannot cache one model for all ranges."""
    s, zp = F32(0.3), 3
    il, ih = F32(s * (-128 - zp)), F32(s * (127 - zp))
    k = np.arange(-140, 140, dtype=F32)
    x = ((k + F32(0.5)) * s).astype(F32)
    const = _compile(_fq_model(il, ih, il, ih, 256, False, x.size))([x])[0]
    param = _compile(_fq_model(il, ih, il, ih, 256, True, x.size))(
        [x, *(np.asarray(v, F32) for v in (il, ih, il, ih))]
    )[0]
    assert np.any(const != param)


def _ov_folded_fake_quantize(x, il, ih, ol, oh, levels):
    """What the CPU plugin computes for a FakeQuantize with float output and constant ranges, as
    read from the compiled model's constants (export_model): input side two roundings, output side
    folded into a dequantization ol' + osc' * q with one FMA."""
    lm1 = F32(levels - 1)
    isc = F32(lm1 / F32(ih - il))
    ish = F32(il * isc)
    q = np.rint(F32(1) * ((np.minimum(np.maximum(x, il), ih) * isc).astype(F32) - ish).astype(F32))
    a = F32(F32(oh - ol) / lm1)
    ozp = F32(F32(-ol * lm1) / F32(oh - ol))
    ol2 = F32(-ozp * a)
    osc2 = F32(F32(F32(F32(lm1 - ozp) * a) - ol2) / lm1)
    return fma_f32(q, osc2, ol2)


def test_standalone_fake_quantize_folds_its_output_range():
    """levels=256, per-tensor ranges: the plugin's output ends are ol' = -ozp*A (not ol) and its step
    osc' is re-derived from them. This formula reproduces 12 random range sets exactly; the
    unfolded SCALE_SHIFT (osc = (oh-ol)/255, ol) does not; the `openvino` profile names it
    (RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT) and matches."""
    import dataclasses

    from qverify.reference import profiles
    from qverify.reference.semantics import RangeFormula

    ovp = profiles.get("openvino")
    unfolded = dataclasses.replace(
        ovp, name="openvino-unfolded", quant=dataclasses.replace(ovp.quant, range_formula=RangeFormula.SCALE_SHIFT)
    )
    rng = np.random.default_rng(7)
    profile_differs = 0
    for _ in range(12):
        il, ih = F32(-rng.uniform(0.01, 100)), F32(rng.uniform(0.01, 100))
        ol, oh = (
            (il, ih) if rng.random() < 0.5 else (F32(-rng.uniform(0.01, 100)), F32(rng.uniform(0.01, 100)))
        )
        x = np.concatenate([rng.uniform(il * 1.2, ih * 1.2, 400), np.linspace(il, ih, 256)]).astype(F32)
        got = _compile(_fq_model(il, ih, ol, oh, 256, False, x.size))([x])[0]
        np.testing.assert_array_equal(got, _ov_folded_fake_quantize(x, il, ih, ol, oh, 256))
        np.testing.assert_array_equal(got, fake_quantize_range(x, il, ih, ol, oh, 256, profile="openvino"))
        profile_differs += int(np.any(got != fake_quantize_range(x, il, ih, ol, oh, 256, profile=unfolded)))
    assert profile_differs > 0


def test_dequantize_linear_is_one_fma_with_a_folded_zero_point(backend, cpu):
    """ONNX DequantizeLinear on the CPU plugin: y = fma(q, s, -f32(zp*s)) (one rounding), not
    f32((q - zp)*s)."""
    rng = np.random.default_rng(1)
    differs = 0
    for _ in range(6):
        s, zp = F32(rng.uniform(1e-3, 10)), int(rng.integers(1, 256))
        q = np.arange(256, dtype=np.uint8).reshape(4, 64)
        got = backend.run_op(OpCase("DequantizeLinear", [q, s, np.uint8(zp)]), cpu)
        np.testing.assert_array_equal(got, fma_f32(q.astype(F32), s, -F32(F32(zp) * s)))
        differs += int(np.any(got != ((q.astype(F32) - F32(zp)) * s).astype(F32)))
    assert differs > 0


def test_nan_and_inf_saturate_with_static_shapes(backend, cpu):
    """NaN -> qmin (the range's low end), +-inf -> the range ends, for every rank (static shapes, as
    deployed): the profile's NaN policy QMIN."""
    x = np.array([np.nan, 1.0, np.inf, -np.inf], F32)
    for shape in [(4,), (1, 2, 2), (1, 1, 2, 2)]:
        for dtype, lo, hi in ((np.uint8, 0, 255), (np.int8, -128, 127)):
            got = backend.run_op(
                OpCase("QuantizeLinear", [x.reshape(shape), F32(0.1), np.asarray(3, dtype)]), cpu
            )
            assert got.ravel()[[0, 2, 3]].tolist() == [lo, hi, lo], (shape, dtype)


def test_dynamic_shapes_compute_differently(backend, cpu):
    """The same ONNX QuantizeLinear with its dimensions left dynamic runs other kernels: NaN becomes
    qmax for a 4-D input (qmin when static), which is why the adapter compiles static shapes."""
    from qverify.backends import onnx_graphs
    from qverify.backends.openvino_backend import compile_config

    x = np.array([np.nan, 1.0, np.inf, -np.inf], F32).reshape(1, 1, 2, 2)
    case = OpCase("QuantizeLinear", [x, F32(0.1), np.uint8(3)])
    built = onnx_graphs.build(case, "constant")
    core = ov.Core()
    dynamic = core.compile_model(core.read_model(built.serialized()), "CPU", compile_config())(
        built.feeds(case)
    )[0]
    static = backend.run_op(case, cpu)
    assert static.ravel()[0] == 0 and dynamic.ravel()[0] == 255


@pytest.mark.parametrize(
    "op, shape, axis, loads",
    [
        ("QuantizeLinear", (3, 4), 1, True),
        ("QuantizeLinear", (3, 4), 0, False),
        ("QuantizeLinear", (2, 3, 4, 5), 1, False),
        ("DequantizeLinear", (2, 3, 4), 1, True),
        ("DequantizeLinear", (2, 3, 4), 2, True),
        ("fake_quant", (2, 3, 4, 5), 1, True),
        ("fake_quant", (2, 3, 4, 5), 2, True),
    ],
)
def test_onnx_per_axis_qdq_loads_on_the_last_axis_only(backend, cpu, op, shape, axis, loads):
    """The ONNX frontend rejects per-axis QuantizeLinear on any axis but the last ("Argument shapes
    are inconsistent"); per-axis DequantizeLinear and FakeQuantize with per-axis ranges load on any
    axis. So per-axis parameters are not drawn for QuantizeLinear."""
    rng = np.random.default_rng(2)
    n = shape[axis]
    s = rng.uniform(0.01, 0.1, n).astype(F32)
    if op == "QuantizeLinear":
        case = OpCase(op, [rng.normal(0, 1, shape).astype(F32), s, np.zeros(n, np.int8)], {"axis": axis})
    elif op == "DequantizeLinear":
        case = OpCase(
            op, [rng.integers(-128, 128, shape).astype(np.int8), s, np.zeros(n, np.int8)], {"axis": axis}
        )
    else:
        x = rng.normal(0, 1, shape).astype(F32)
        case = OpCase(op, [x, s, np.zeros(n, np.int32)], {"axis": axis, "quant_min": -128, "quant_max": 127})
    if loads:
        assert backend.run_op(case, cpu).shape == shape
    else:
        with pytest.raises(RuntimeError, match="Argument shapes are inconsistent"):
            backend.run_op(case, cpu)


def _qdq_conv(wdtype=np.int8, wz=0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(0, 128, (5, 4, 3, 3)).astype(wdtype)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    return OpCase(
        "qdq_conv",
        [x, F32(0.05), np.uint8(3), w, F32(0.01), np.asarray(wz, wdtype), F32(0.2), np.uint8(5)],
        attrs,
    )


def test_qdq_conv_runs_int8_kernels_and_records_a_float_fallback(backend, cpu):
    """u8 activations x s8 symmetric weights: the Convolution of the runtime model runs in u8. A
    non-zero weight zero point makes the plugin run it in f32, and execution_info says so."""
    int8 = backend.execution_info(_qdq_conv(), cpu)
    assert int8["precision"] == "int8" and not int8["fell_back_to_float"]
    assert {c["type"] for c in int8["compute_layers"]} == {"Convolution"}
    fallback = backend.execution_info(_qdq_conv(wz=7), cpu)
    assert fallback["precision"] == "float" and fallback["fell_back_to_float"]
    assert backend.run_op(_qdq_conv(wz=7), cpu).dtype == np.uint8


def test_qdq_conv_with_uint8_weights_does_not_compile(backend, cpu):
    with pytest.raises(RuntimeError, match="No suitable implementations"):
        backend.run_op(_qdq_conv(wdtype=np.uint8), cpu)


def test_unsupported_op_is_a_one_line_input_error(backend, cpu):
    assert not backend.supports("MatMulInteger", cpu)
    with pytest.raises(InputError, match="does not run op"):
        backend.run_op(OpCase("MatMulInteger", []), cpu)


# -- model level -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="the exporter needs torch")
    from qverify.quantizer import quantize_ptq

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).eval()
    rng = np.random.default_rng(0)
    qm = quantize_ptq(net, rng.standard_normal((32, 2, 6, 6)).astype(F32))
    files = qm.export(tmp_path_factory.mktemp("exported"), formats=["onnx_qdq", "openvino_ir", "torch_fq"])
    return qm, files, rng.standard_normal((4, 2, 6, 6)).astype(F32)


@pytest.mark.parametrize("fmt", ["openvino_ir", "onnx_qdq"])
def test_open_model_runs_int8_and_says_so(backend, exported, fmt):
    qm, files, x = exported
    sess = backend.open_model({fmt: files[fmt]}, threads=1)
    info = sess.execution_info
    assert info["format"] == fmt and info["inference_precision_hint"] == "f32"
    assert info["precision"] in ("int8", "mixed") and any(
        c["precision"] in ("u8", "i8") for c in info["compute_layers"]
    )
    y = sess.run({sess.input_names[0]: x})[0]
    sim = backend_independent_simulation(files, x)
    out_scale = float(np.max(qm.artifact.scale(qm.artifact.output)))
    assert y.shape == sim.shape and np.max(np.abs(y - sim)) <= 3 * out_scale + 1e-6


def backend_independent_simulation(files, x):
    """The fake-quant simulation (torch_fq) of the same artifact."""
    torch_backend = registry.get("torch")
    sess = torch_backend.open_model({"torch_fq": files["torch_fq"]})
    return sess.run({sess.input_names[0]: x})[0]


def test_open_model_fails_closed(backend, tmp_path):
    with pytest.raises(ModelError, match="none of the given formats"):
        backend.open_model({"torch_fq": tmp_path})
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelError, match="no weights file"):
        backend.open_model({"openvino_ir": xml})
    with pytest.raises(ModelError, match="does not exist"):
        backend.open_model({"onnx_qdq": tmp_path / "missing.onnx"})


def test_small_scales_shift_fake_quantize_by_128_minus_zero_point(backend, cpu):
    """A real runtime fault: for a FakeQuantize with u8-style ranges il = -zp*s, ih = (255-zp)*s
    and s <= 1e-9, the CPU plugin's output is shifted by (128 - zp) steps from the spec. (H1) The
    `openvino` profile now reproduces it (|ol|, |oh| < 1e-6: a signed output range without zero
    point), so it is exact against the profile at 1e-10; s = 1e-7 (only |ol| < 1e-6) is within 1
    step of the profile here."""
    from qverify.reference.quantize import fake_quant

    def worst(s, zp):
        s = F32(s)
        x = ((np.arange(-3, 260) + F32(0.3)) * s - F32(zp * s)).astype(F32)
        case = OpCase("fake_quant", [x, s, np.int32(zp)], {"quant_min": 0, "quant_max": 255})
        got = backend.run_op(case, cpu).astype(np.float64)
        return np.max(np.abs(got - fake_quant(x, s, zp, quant_min=0, quant_max=255, profile="openvino")) / s)

    assert worst(1e-4, 1) < 1e-3
    assert worst(1e-7, 1) <= 1.0 + 1e-3
    # (H1) the `openvino` profile now models it (|ol|, |oh| < 1e-6: a signed range without zero
    # point, RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT): exact; still 127 steps from the spec
    assert worst(1e-10, 1) < 1e-3
    s = F32(1e-10)
    x = ((np.arange(-3, 260) + F32(0.3)) * s - F32(s)).astype(F32)
    case = OpCase("fake_quant", [x, s, np.int32(1)], {"quant_min": 0, "quant_max": 255})
    got = backend.run_op(case, cpu).astype(np.float64)
    spec = fake_quant(x, s, 1, quant_min=0, quant_max=255, profile="onnx")
    assert np.max(np.abs(got - spec) / s) == pytest.approx(127, abs=1e-3)
    assert worst(1e-10, 5) < 1e-3
    assert worst(1e-10, 128) < 1e-3


def test_grouped_conv_with_a_channel_multiplier_is_off_by_more_than_one(backend, cpu):
    """An int8 grouped convolution with a channel multiplier (group = Cin = 2, Cout = 4) differs
    from the float QDQ semantics by 2-3 LSB, where plain depthwise (Cout = Cin) and full convs stay
    within 1 LSB: the CPU plugin runs it on oneDNN's gemm kernel, which saturates u8*s8 pairs to
    int16 (profile openvino.int16_pairs; tests/backends/test_openvino_faults.py)."""
    from qverify.conformance.families import FAMILIES

    family = FAMILIES["qdq_conv"]

    def worst(group, cin, cout):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (1, cin, 5, 5)).astype(np.uint8)
        w = rng.integers(-128, 128, (cout, cin // group, 3, 3)).astype(np.int8)
        attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": group}
        case = OpCase(
            "qdq_conv",
            [x, F32(1 / 64), np.uint8(254), w, F32(1 / 128), np.int8(0), F32(1.0), np.uint8(128)],
            attrs,
        )
        assert backend.execution_info(case, cpu)["precision"] == "int8"
        got = backend.run_op(case, cpu).astype(np.int64)
        return int(np.max(np.abs(got - family.reference(case, "openvino").astype(np.int64))))

    assert worst(1, 2, 4) <= 1 and worst(2, 2, 2) <= 1
    assert worst(2, 2, 4) >= 2


def test_strided_1x1_qdq_conv_with_padding_gets_a_wrong_output_shape(backend, cpu):
    """A runtime fault left unexplained in the conformance rows: with static shapes the CPU plugin
    rewrites a QDQ 1x1 convolution with stride 2 and padding 1 into a Pooling + Convolution whose
    output is one row and column too large (3x3 for a 1x1 input, ONNX says 2x2), although the
    model's own shape inference says 2x2; the same model with dynamic shapes is right."""
    x = np.full((1, 1, 3, 3), 7, np.uint8)
    w = np.ones((1, 1, 1, 1), np.int8)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    case = OpCase("qdq_conv", [x, F32(1), np.uint8(0), w, F32(1), np.int8(0), F32(1), np.uint8(0)], attrs)
    assert backend.run_op(case, cpu).shape == (1, 1, 4, 4)  # ONNX: (1, 1, 3, 3)
    layers = {c["type"] for c in backend.execution_info(case, cpu)["compute_layers"]}
    assert "Convolution" in layers
