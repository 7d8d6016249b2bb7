"""Named runtime profiles: what each int8 runtime computes, composed from the named choices in
:mod:`qverify.reference.semantics`.

A profile that disagrees with its runtime is a bug in the profile. ``confirmed`` says what was
checked against the installed runtime and how; the backend conformance tests check the rest.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from qverify.errors import InputError
from qverify.reference.semantics import (
    Accumulation,
    ClampOrder,
    ConvKOrder,
    DequantForm,
    FloatSum,
    KernelSemantics,
    NaNPolicy,
    Precision,
    QuantForm,
    QuantSemantics,
    RangeFormula,
    Requantization,
    ScaleOp,
    ZeroPointEntry,
)

__all__ = ["Profile", "get", "names", "all_profiles", "cli_main"]


@dataclass(frozen=True)
class Profile:
    """One runtime's arithmetic.

    ``quant``: QuantizeLinear / fake-quant per tensor. ``per_axis``: the same for per-axis and
    blocked parameters where the runtime takes another code path (None: same as ``quant``).
    ``symmetric_only``: the runtime accepts zero point 0 only. ``block_remainder``: blocked
    quantization may end with a short block (ONNX allows it). ``source``: the document or source
    file that says so; ``confirmed``: what qverify's own checks confirmed on the installed version.
    """

    name: str
    source: str
    quant: QuantSemantics
    kernel: KernelSemantics
    notes: str = ""
    per_axis: QuantSemantics | None = None
    symmetric_only: bool = False
    block_remainder: bool = True
    confirmed: str = ""

    def __post_init__(self):
        if not self.name or not self.source:
            raise InputError("a Profile needs a name and a source", "pass name=... and source=...")
        for sem in (self.quant, self.per_axis):
            if sem is None:
                continue
            if sem.zero_point is ZeroPointEntry.FMA and sem.precision is not Precision.FLOAT32:
                raise InputError(
                    f"profile {self.name!r}: FMA zero point is modelled for float32 only",
                    "use precision=FLOAT32 with ZeroPointEntry.FMA",
                )

    def semantics(self, per_axis: bool = False) -> QuantSemantics:
        return self.per_axis if per_axis and self.per_axis is not None else self.quant


_F32 = Precision.FLOAT32
_F64 = Precision.FLOAT64

_PROFILES: dict[str, Profile] = {}


def _add(p: Profile) -> None:
    _PROFILES[p.name] = p


_add(Profile(
    name="onnx",
    source="https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html (opset 21/23: "
    "saturate(round(x / y_scale) + y_zero_point), round half to even)",
    quant=QuantSemantics(ScaleOp.DIVIDE, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.RAISE),
    kernel=KernelSemantics(Accumulation.EXACT, Requantization.FLOAT64_ZP_BEFORE),
    notes="The written spec. NaN is undefined there, so the reference refuses it. Kernel "
    "requantization as onnx.reference computes QLinearMatMul/QLinearConv (float64, zp before "
    "rounding).",
    confirmed="ONNX's own QuantizeLinear/DequantizeLinear/DynamicQuantizeLinear cases reproduced "
    "bit-exactly (tests/reference/test_quantize_onnx_cases.py).",
))

_add(Profile(
    name="onnxruntime",
    source="onnxruntime/core/mlas/lib/quantize.cpp (MlasQuantizeLinear: x / scale, clamp to "
    "[qmin - zp, qmax - zp], round to nearest even, + zp); onnxruntime/core/providers/cpu/"
    "quantization/quantize_linear.cc",
    quant=QuantSemantics(ScaleOp.DIVIDE, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.QMIN),
    kernel=KernelSemantics(Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER,
                           float_conv_sum=FloatSum.MLAS,  # (A) MLAS's float Conv order
                           float_matmul_sum=FloatSum.MLAS,  # (A) MLAS's float MatMul/Gemm order
                           float_average_pool_kernel_order=True),  # (A) MLAS's float AveragePool order
    notes="CPU execution provider. With graph optimisation, DQ->Conv/MatMul->Q fuse into "
    "QLinearConv/QLinearMatMul: integer kernels, float multiplier, u8*s8 pairs saturate to int16 "
    "without VNNI (Accumulation.AUTO). A float Conv (NCHW, one thread) sums in MLAS's order "
    "(float_conv_sum=FloatSum.MLAS), likewise MatMul and Gemm (float_matmul_sum; Gemm with alpha 1, "
    "no transA, beta 1), a float AveragePool window in kernel order (float_average_pool_kernel_order).",
    confirmed="QuantizeLinear ties (divide vs reciprocal) and NaN -> qmin checked with onnxruntime "
    "1.32 (tests/reference/test_profiles.py). Float Conv (FloatSum.MLAS) bit-exact against Conv "
    "at optimisation disabled and DQ -> Conv -> Relu -> Q at 'all' (com.microsoft.FusedConv) on "
    "Hypothesis draws: full/depthwise, strides, pads, dilations, 1-D, K over 128 "
    "(tests/reference/test_ort_conv_float.py); MatMul/Gemm (test_ort_matmul_float.py) and float AveragePool "
    "(test_ort_average_pool_float.py) likewise.",
))

_add(Profile(
    name="openvino",
    source="src/plugins/intel_cpu/src/nodes/fake_quantize.cpp (crop, input scale/shift, round, "
    "output scale/shift); https://docs.openvino.ai/ FakeQuantize-1 spec",
    quant=QuantSemantics(
        ScaleOp.RECIPROCAL, ZeroPointEntry.BEFORE_ROUNDING, _F32, nan=NaNPolicy.QMIN,
        form=QuantForm.RANGE, range_formula=RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT,
        dequant_form=DequantForm.FMA_FOLDED_ZERO_POINT,
    ),
    kernel=KernelSemantics(Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER),
    block_remainder=False,
    notes="ONNX Q/DQ become FakeQuantize(il=s(qmin-zp), ih=s(qmax-zp), levels); the CPU plugin "
    "evaluates q = rne(f32(f32(clamp(x)*isc) - ish)) and, for a float output, folds the output "
    "range into a u8 dequantization: y = fma(q, osc', ol') (RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT; "
    "levels 256/255/16/15 only). DequantizeLinear is fma(q, s, -f32(zp*s)), per tensor and per "
    "axis. Blocked quantization must divide evenly.",
    confirmed="openvino 2026.4 CPU (AVX-512 machine), FakeQuantize levels=256 per tensor: input "
    "side two roundings (not FMA), output one FMA; NaN -> input_low, +-inf -> the range ends "
    "(tests/reference/test_profiles.py). Output side folded (ol' = -ozp*A, osc' re-derived): exact "
    "in tests/backends/test_openvino.py::test_standalone_fake_quantize_folds_its_output_range and "
    "tests/reference/test_openvino_formulas.py (levels 256/255/16/15, per tensor and per axis; "
    "levels 2/3/17/254/257 keep the unfolded output side there, 100/128/1000 in a probe). DequantizeLinear FMA with "
    "the zero point folded: exact in test_dequantize_linear_is_one_fma_with_a_folded_zero_point and "
    "tests/reference/test_openvino_formulas.py (per axis too).",
))

_TORCH_FQ_SRC = (
    "aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp (fake_quantize_tensor_"
    "cachemask_kernel: inv_scale = 1.0f / scale; nearbyint(x * inv_scale) + zp); "
    "aten/src/ATen/native/quantized/FakeQuantPerChannelAffine.cpp"
)
_add(Profile(
    name="torch.fake_quantize",
    source=_TORCH_FQ_SRC,
    quant=QuantSemantics(ScaleOp.RECIPROCAL, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.QMIN),
    per_axis=QuantSemantics(
        ScaleOp.RECIPROCAL, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.QMIN,
        clamp=ClampOrder.CAST_THEN_CLAMP,
    ),
    kernel=KernelSemantics(Accumulation.EXACT, Requantization.FLOAT_MULTIPLIER),
    notes="torch.fake_quantize_per_tensor_affine / _per_channel_affine (float kernels, no integer "
    "accumulation). The docstring says divide; the CPU kernel multiplies by a float32 reciprocal. "
    "Per-channel casts to int64 before clamping: +inf gives qmin.",
    confirmed="torch 2.13 CPU: ties at (k+1/2)s +-1ulp match reciprocal and not divide; NaN -> qmin; "
    "+inf -> qmax per tensor, qmin per channel.",
))

_add(Profile(
    name="torch.quantize",
    source="aten/src/ATen/native/quantized/affine_quantizer_base.cpp and fbgemm "
    "src/QuantUtils.cc (Quantize: fma(x, 1.0f/scale, zero_point), nearbyint); per-channel "
    "quantize_tensor_per_channel_affine (x * inv_scale, + zp, nearbyint)",
    quant=QuantSemantics(ScaleOp.RECIPROCAL, ZeroPointEntry.FMA, _F32, nan=NaNPolicy.QMAX),
    per_axis=QuantSemantics(
        ScaleOp.RECIPROCAL, ZeroPointEntry.BEFORE_ROUNDING, _F32, nan=NaNPolicy.RAISE,
        dequant_precision=_F64,
    ),
    kernel=KernelSemantics(Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER,
                          dynamic_activation_reduce_range=True),  # (G3) dynamic Linear
    notes="torch.quantize_per_tensor / quantize_per_channel (eager quantized tensors, x86 FBGEMM "
    "engine). Per tensor the zero point enters inside one FMA; per channel it is added in float32 "
    "before rounding (two roundings), the reciprocal of the float32-rounded scale, while "
    "dequantize keeps the double scale.",
    confirmed="torch 2.13 CPU: per tensor matches FMA on ties with zp 0 and 3, NaN -> qmax; per "
    "channel matches f32(f32(x*r) + zp) with zp 3, r = 1/f32(scale) also for double scales that "
    "are not float32 values; NaN gives 0 there (not modelled: refused).",
))

_add(Profile(
    name="torch.pt2e",
    source="torch/ao/quantization/fx/_decomposed.py (quantized_decomposed.quantize_per_tensor: "
    "inv_scale = 1.0 / scale in Python float; clamp(round(x * inv_scale) + zp))",
    quant=QuantSemantics(
        ScaleOp.RECIPROCAL, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.RAISE,
        reciprocal_precision=_F64,
    ),
    kernel=KernelSemantics(Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER),
    notes="PT2E reference decomposition: the reciprocal of the scale as given (a Python float, "
    "double) is computed in double, then used in float32. NaN reaches a float->int8 cast "
    "(undefined): refused.",
    confirmed="torch 2.13 CPU: quantized_decomposed.quantize_per_tensor matches on ties with zp 0 "
    "and 3, also for scales that are not float32 values (0.0371).",
))

_add(Profile(
    name="tensorrt",
    source="TensorRT Developer Guide, 'Working with Quantized Types' (IQuantizeLayer: "
    "clamp(round(x / scale), -128, 127), round to nearest even, zero point must be 0)",
    quant=QuantSemantics(ScaleOp.DIVIDE, ZeroPointEntry.AFTER_ROUNDING, _F32, nan=NaNPolicy.RAISE),
    kernel=KernelSemantics(Accumulation.EXACT, Requantization.FLOAT_MULTIPLIER),
    symmetric_only=True,
    notes="From the documentation only (no GPU here). Symmetric only; activations per tensor, "
    "weights per output channel. Fused int8 kernels are not bitwise identical to a float "
    "simulation (NVIDIA's own statement).",
))

# ---- added by the backends engineer (B1, conformance of onnxruntime): fused-kernel profiles ----
# ONNX Runtime with graph optimisation (ORT_ENABLE_ALL, the default) rewrites DQ->Conv/MatMul/Gemm->Q
# into QLinearConv/QLinearMatMul for (u8,u8,u8) and (u8,s8,u8) operands, and (s8,s8,s8) only with
# session.qdqisint8allowed=1 (observed in the optimised graph, onnxruntime 1.32); the conv runs NHWC
# (Transpose around QLinearConv), so K is laid out (kh, kw, cin).
_ORT_FUSED_SOURCE = (
    "onnxruntime/core/optimizer/qdq_transformer/selectors_actions/qdq_selector_action_transformer.cc "
    "(DQ->Conv/MatMul->Q -> QLinearConv/QLinearMatMul); onnxruntime/core/mlas/lib/quantize.cpp "
    "(MlasRequantizeOutput: float multiplier, round to nearest even, + zp)"
)
_add(Profile(
    name="onnxruntime.fused",
    source=_ORT_FUSED_SOURCE,
    quant=_PROFILES["onnxruntime"].quant,
    kernel=KernelSemantics(
        Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER,
        conv_k_order=ConvKOrder.KH_KW_CIN, fuse_qdq=True, fuse_int8_activations=False,
        int8_qdq_to_uint8=True,  # (kernels author) in-graph int8 Q->DQ pairs become uint8 and fuse
        float_conv_sum=FloatSum.MLAS,  # (A) an unfused Conv (e.g. before a Relu that Q does not clamp)
        float_matmul_sum=FloatSum.MLAS,  # (A) an unfused MatMul/Gemm
        float_average_pool_kernel_order=True,  # (A) an unfused float AveragePool
        fuse_qdq_add=True,  # (kernels author) DQ + DQ -> Q runs as QLinearAdd
        fuse_qdq_global_average_pool=True,  # (kernels author) QLinearGlobalAveragePool
        fuse_qdq_average_pool=True,  # (kernels author) QLinearAveragePool
        average_pool_global_fallback=True,  # (G1) kernel == spatial shape, no pads: the global kernel
        average_pool_divide_by_kernel_size=True,  # (G1) count_include_pad divides by prod(kernel_shape)
    ),
    notes="ONNX Runtime CPU with graph optimisation on (default session options): QDQ subgraphs with "
    "uint8 activations run as fused integer kernels; int8 activations stay on the float path. "
    "Single ops as the onnxruntime profile. A Conv left in float (DQ weights, e.g. Conv -> Relu -> Q "
    "with Q's zero point above qmin: com.microsoft.FusedConv) sums in MLAS's NCHW order; a float Conv "
    "with constant float weights becomes an NCHWc Conv at this level, whose order is not modelled.",
    confirmed="onnxruntime 1.32: qverify conformance rows onnxruntime/qdq_*/all bit-exact (u8 activations).",
))
_add(Profile(
    name="onnxruntime.fused_s8",
    source=_ORT_FUSED_SOURCE + "; session option session.qdqisint8allowed=1",
    quant=_PROFILES["onnxruntime"].quant,
    # as onnxruntime.fused, with int8 activations fused too (and so no int8 -> uint8 rewrite)
    kernel=replace(_PROFILES["onnxruntime.fused"].kernel, fuse_int8_activations=True, int8_qdq_to_uint8=False),
    notes="As onnxruntime.fused with session.qdqisint8allowed=1: int8 activations fuse too.",
    confirmed="onnxruntime 1.32: qverify conformance rows onnxruntime/qdq_*/all+qdqisint8allowed bit-exact.",
))
# ---- end of B1 block ----

# ---- added by H2: torch's eager x86 int8 engine (qverify.quantizer.torch_int8 modules) ----
_add(Profile(
    name="torch.x86",
    source="aten/src/ATen/native/quantized/cpu (quantized conv/linear through FBGEMM/oneDNN: integer "
    "accumulation, float requantization; adaptive_avg_pool2d keeps the input's qparams); "
    "qverify.quantizer.torch_int8 (pool output re-quantized by dequantize -> quantize_per_tensor)",
    quant=_PROFILES["torch.quantize"].quant,
    per_axis=_PROFILES["torch.quantize"].per_axis,
    kernel=KernelSemantics(
        Accumulation.AUTO, Requantization.FLOAT_MULTIPLIER,
        fuse_qdq=True, fuse_int8_activations=False,
        fuse_qdq_global_average_pool=True, global_average_pool_keeps_input_params=True,
        # (F) oneDNN's conv post-ops: two steps, source scale round-tripped through torch's 1/sx (was
        # FLOAT_BIAS_ZP_BEFORE, H2)
        conv_requantization=Requantization.FLOAT_TWO_STEP_ZP_BEFORE, conv_source_scale_round_trip=True,
        fuse_qdq_average_pool=True, average_pool_keeps_input_params=True,  # (H2) avg_pool2d keeps qparams
        dynamic_activation_reduce_range=True,  # (G3) torch's dynamic Linear: 7-bit activations
    ),
    notes="torch's eager int8 modules (engine x86) as qverify's torch_int8 loader runs them (quint8 "
    "activations only: int8 ones stay on the float path). Conv (symmetric weights, oneDNN): exact "
    "integer accumulation, then oneDNN's post-ops in two steps, rne(f32(f32(f32(f32(acc*sx')*sw) + "
    "f32(bq*f32(sx*sw))) * f32(1/sy)) + zy) with sx' = f32(1/f32(1/sx)) (torch hands ideep 1/sx) - the "
    "bias in float after scaling, the zero point before rounding (conv_requantization, "
    "conv_source_scale_round_trip; oneDNN's gemm convolution, picked for some grouped convs with a channel "
    "multiplier, uses one f32(sx*sw): deviation in qverify/deviations/torch.toml); Linear: float multiplier, zero "
    "point after rounding. GlobalAveragePool / AveragePool keep the input's scale and zero point "
    "(see KernelSemantics) and are then re-quantized by dequantize -> quantize.",
    confirmed="torch 2.13 x86 engine, AMD EPYC (avx512_vnni), tests/reference/test_torch_int8_model.py: "
    "nnq.Conv2d (depthwise/full, per-tensor/per-channel, bias or not, pow2 ties) given the bias "
    "f32(bq*f32(sx*sw)), adaptive_avg_pool2d(1) and avg_pool2d (count_include_pad, channels-last) "
    "bit-exact on Hypothesis draws; every int8 layer of mobilenet-digits and cnn-digits bit-exact (same bias); "
    "(F) tests/reference/test_two_step_requant.py: tie-heavy symmetric conv draws bit-exact (300/300 1x1 "
    "probes per-tensor and per-channel, bias or not, where the one-f32(sx*sw) form matched 222/300).",
))


def get(name) -> Profile:
    """The profile called ``name`` (a Profile is returned unchanged)."""
    if isinstance(name, Profile):
        return name
    try:
        return _PROFILES[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown profile {name!r}", f"choose from: {', '.join(_PROFILES)}") from None


def names() -> list[str]:
    """Names of the available profiles, in a fixed order."""
    return list(_PROFILES)


def all_profiles() -> list[Profile]:
    return list(_PROFILES.values())


def _describe(sem: QuantSemantics | None) -> str:
    if sem is None:
        return "-"
    parts = []
    for f in fields(sem):
        v = getattr(sem, f.name)
        if v == f.default:
            continue
        parts.append(f"{f.name}={getattr(v, 'value', v)}")
    return ", ".join(parts) or "defaults"


def cli_main(argv: list[str] | None = None) -> int:
    """``qverify profiles [--verbose]``: a table of the profiles and their arithmetic choices."""
    ap = argparse.ArgumentParser(prog="qverify profiles", description="list the reference's runtime profiles")
    ap.add_argument("--verbose", "-v", action="store_true", help="also print sources and notes")
    args = ap.parse_args(argv or [])
    cols = ("profile", "scale", "zero point", "prec", "round", "NaN", "clamp", "accum", "requant")
    rows = []
    for p in _PROFILES.values():
        q, k = p.quant, p.kernel
        scale = q.scale_op.value if q.form is QuantForm.SCALE_ZP else f"range/{q.range_formula.value}"
        rows.append((
            p.name, scale, q.zero_point.value, q.precision.value, q.rounding.value, q.nan.value,
            q.clamp.value, k.accumulation.value, k.requantization.value,
        ))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print()
    for p in _PROFILES.values():
        extras = []
        if p.per_axis is not None:
            extras.append(f"per-axis: {_describe(p.per_axis)}")
        if p.symmetric_only:
            extras.append("zero point 0 only")
        if not p.block_remainder:
            extras.append("blocks must divide evenly")
        print(f"{p.name}: {'; '.join(extras) or 'per-axis as per-tensor'}")
        if args.verbose:
            print(f"  source: {p.source}")
            print(f"  notes: {p.notes}")
            if p.confirmed:
                print(f"  confirmed: {p.confirmed}")
    return 0


# ---- added by E (issue 3): torch's PT2E/Inductor int8 path (torch_backend variant int8.inductor) ----
_add(Profile(
    name="torch.inductor",
    source="torch/_inductor/fx_passes/quantization.py (dq -> conv2d/linear(dq_per_channel(w)) -> q lowered "
    "to onednn.qconv_prepack + qconv_pointwise.tensor / qlinear_prepack + qlinear_pointwise.tensor "
    "under torch._inductor.config.freezing); torchao X86InductorQuantizer (u8 activations per tensor, "
    "s8 weights per channel symmetric, float bias)",
    quant=_PROFILES["torch.pt2e"].quant,
    per_axis=_PROFILES["torch.pt2e"].per_axis,
    kernel=KernelSemantics(
        Accumulation.AUTO, Requantization.FLOAT_TWO_STEP_ZP_BEFORE,  # (F) was FLOAT_BIAS_ZP_BEFORE
        conv_requantization=Requantization.FLOAT_TWO_STEP_ZP_BEFORE,
    ),
    notes="oneDNN int8 conv/linear as Inductor calls them: exact integer accumulation, then the scales one "
    "at a time, v = f32(f32(f32(acc)*sx)*sw) (+ the f32 bias f32(b*f32(sx*sw))), y = sat(rne(f32(v*f32(1/sy)) "
    "+ zy)): zero point before rounding for conv and linear alike (not FBGEMM's after-rounding linear of "
    "torch.x86) - Requantization.FLOAT_TWO_STEP_ZP_BEFORE. oneDNN's gemm convolution (some grouped convs "
    "with a channel multiplier) uses one f32(sx*sw) instead: declared in qverify/deviations/torch.toml.",
    confirmed="torch 2.13, AMD EPYC (avx512_vnni), tests/backends/test_torch_inductor.py: compiled PT2E-form "
    "graphs (freezing) equal the direct onednn calls bit for bit; tests/reference/test_two_step_requant.py: "
    "tie-heavy conv (per-tensor/per-channel, bias or not) and linear probes bit-exact; conformance "
    "QLinearConv/QLinearMatMul seeds 0-2 (300 examples) exact but for one gemm-convolution case.",
))


# OpenVINO hands some grouped convs to oneDNN's gemm kernel, which saturates u8*s8 pairs to int16
# even on VNNI CPUs (tests/backends/test_openvino_faults.py): the same arithmetic with pair saturation
_add(Profile(
    name="openvino.int16_pairs",
    source=_PROFILES["openvino"].source + "; oneDNN jit_gemm_I8 / jit_gemm_i8 convolution (vpmaddubsw)",
    quant=_PROFILES["openvino"].quant,
    kernel=replace(_PROFILES["openvino"].kernel, accumulation=Accumulation.PAIRS_INT16, fuse_qdq=True),
    block_remainder=False,
    notes="As openvino, but QDQ convs run as integer kernels (fuse_qdq) with u8*s8 products summed "
    "in adjacent pairs saturated to int16, for the convs the CPU plugin runs as oneDNN gemm "
    "(depthwise, channel multiplier 2, some sizes).",
    confirmed="openvino 2026.4 CPU (AVX-512 VNNI): the jit_gemm depthwise-multiplier-2 convs of "
    "tests/backends/test_openvino_faults.py equal qlinear_conv with pair saturation exactly; in the "
    "conformance QDQ conv rows (seeds 1-2, 300 examples) every such case is within 1 LSB of this "
    "profile (the requantization rounding of deviation openvino/qdq_*/cpu).",
))
