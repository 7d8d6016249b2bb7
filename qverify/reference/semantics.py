"""The arithmetic choices on which int8 runtimes differ, as named values.

A :class:`~qverify.reference.profiles.Profile` composes one value of each. The reference functions
never pick a behaviour implicitly: every branch in them is one of these names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Rounding(str, enum.Enum):
    HALF_EVEN = "half_even"  # round half to even (IEEE default, ONNX, most runtimes)
    HALF_AWAY = "half_away"  # round half away from zero (std::round, an nnabla option)
    HALF_UP = "half_up"  # round half toward +inf (fixed-point requantizers: (x + 2^(n-1)) >> n)


class ScaleOp(str, enum.Enum):
    DIVIDE = "divide"  # x / s
    RECIPROCAL = "reciprocal"  # x * (1 / s), the reciprocal rounded to the compute precision


class ZeroPointEntry(str, enum.Enum):
    AFTER_ROUNDING = "after_rounding"  # round(x/s) + zp, integer add
    BEFORE_ROUNDING = "before_rounding"  # round(x/s + zp), two float ops
    FMA = "fma"  # round(fma(x, 1/s, zp)), one rounding of x*(1/s)+zp


class Precision(str, enum.Enum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"


class NaNPolicy(str, enum.Enum):
    """What a quantizer returns for NaN input (codes cannot be NaN; fake-quant may propagate)."""

    QMIN = "qmin"
    QMAX = "qmax"
    ZERO = "zero"  # the code of 0.0, i.e. the zero point
    PROPAGATE = "propagate"  # fake-quant only: NaN in, NaN out
    RAISE = "raise"  # undefined behaviour in the runtime: the reference refuses the input


class ClampOrder(str, enum.Enum):
    CLAMP_THEN_CAST = "clamp_then_cast"  # saturate in float, then convert (well defined)
    CAST_THEN_CLAMP = "cast_then_clamp"  # convert to a wide int first (int32/int64), then clamp


class QuantForm(str, enum.Enum):
    """How a runtime is parameterised when it quantizes."""

    SCALE_ZP = "scale_zp"  # code = f(x, scale, zero_point) as chosen by the fields below
    RANGE = "range"  # via FakeQuantize(il=s(qmin-zp), ih=s(qmax-zp), levels); see RangeFormula


class RangeFormula(str, enum.Enum):
    """How FakeQuantize(x, il, ih, ol, oh, L) is evaluated (``fake_quantize_range``)."""

    # OpenVINO opset spec, float32: x <= min(il,ih) -> ol; x > max(il,ih) -> oh; else
    # rne((x - il) / (ih - il) * (L - 1)) / (L - 1) * (oh - ol) + ol
    SPEC = "spec"
    # OpenVINO CPU plugin, float32: isc = (L-1)/(ih-il), ish = il*isc, osc = (oh-ol)/(L-1), osh = ol;
    # q = rne(f32(f32(clamp(x, il, ih)*isc) - ish)); y = fma(q, osc, osh) (one rounding; observed)
    SCALE_SHIFT = "scale_shift"
    # --- added by H1 (issue 3): OpenVINO CPU plugin, FakeQuantize with float output and constant
    # ranges, output side folded into a u8 dequantization (observed, openvino 2026.4): input side
    # as SCALE_SHIFT; D = 255 for L in (256, 255, 15), 15 for L = 16;
    # A = f32((oh-ol)/D), ozp = f32(f32(-ol*D)/(oh-ol)) (0 when |ol| < 1e-6 in every channel),
    # ol' = f32(-ozp*A), oh' = f32(f32(D-ozp)*A) - or, when every channel has ol < 0 < oh within 0.2 % of
    # the signed ratio lo/hi ((-128,127) L=256, (-127,127) L=255, (-8,7) L=16) or with |ol|, |oh| < 1e-6
    # everywhere, no zero point:
    # A = f32((oh-ol)/(hi-lo)), ol' = f32(lo*A), oh' = f32(hi*A);
    # osc' = f32((oh'-ol')/(L-1)); y = fma(q, osc', ol') (one rounding). Other L, or ol == oh in
    # any channel: the output side of SCALE_SHIFT, y = fma(q, f32((oh-ol)/(L-1)), ol).
    SCALE_SHIFT_FOLDED_OUTPUT = "scale_shift_folded_output"


class DequantForm(str, enum.Enum):
    """How ``dequantize`` (DequantizeLinear) evaluates ``y = (q - zp) * s``."""

    PRODUCT = "product"  # f32((q - zp) * s), the product in dequant_precision
    # fma(q, s, -f32(zp*s)): the zero point folded into a float32 shift, one rounding (float32 only;
    # OpenVINO CPU plugin, observed)
    FMA_FOLDED_ZERO_POINT = "fma_folded_zero_point"


class Accumulation(str, enum.Enum):
    EXACT = "exact"  # exact int32 sums
    PAIRS_INT16 = "pairs_int16"  # u8*s8 products summed in adjacent pairs, saturated to int16
    AUTO = "auto"  # PAIRS_INT16 on x86 CPUs without VNNI, EXACT otherwise (see reference.cpu)


class ConvKOrder(str, enum.Enum):
    """Memory order of a conv's reduction axis K = Cin/group * kh * kw (decides which products pair)."""

    CIN_KH_KW = "cin_kh_kw"  # NCHW im2col: channel slowest, kernel column fastest
    KH_KW_CIN = "kh_kw_cin"  # NHWC im2col (MLAS, oneDNN): channel fastest


class Requantization(str, enum.Enum):
    FLOAT_MULTIPLIER = "float_multiplier"  # rne(f32(acc) * f32(sa*sw/sy)) + zp
    FLOAT64_ZP_BEFORE = "float64_zp_before"  # rne(f64(acc) * sa*sw/sy + zp)
    FIXED_POINT = "fixed_point"  # (acc * M + 2^(s-1)) >> s, + zp
    # (H2) float bias added after scaling, zero point before rounding (torch x86 int8 conv, oneDNN):
    # rne(f32(f32(f32(acc) * f32(sa*sw)) + f32(bias * f32(sa*sw))) * f32(1/sy)) + zp), bias the int32 codes
    FLOAT_BIAS_ZP_BEFORE = "float_bias_zp_before"
    # (F) oneDNN int8 conv/matmul (torch's PT2E/Inductor qconv/qlinear_pointwise): source scale, then
    # weight scale, then the float bias, then the destination scale, zero point before rounding:
    # rne(f32(f32(f32(f32(f32(acc) * sa) * sw) + f32(bias * f32(sa*sw))) * f32(1/sy)) + zp)
    FLOAT_TWO_STEP_ZP_BEFORE = "float_two_step_zp_before"


class FloatSum(str, enum.Enum):
    """How a Conv / MatMul / Gemm left on the float path (not fused into an integer kernel) sums its
    float32 products."""

    EXACT = "exact"  # the exact sum (with the bias) rounded once to float32: no runtime's order
    # (A) onnxruntime CPU, one thread, x86-64: MLAS SGEMM kernels (NCHW Conv/FusedConv via im2col, then
    # + bias; MatMul; Gemm with C as the accumulated output): qverify.reference.mlas
    MLAS = "mlas"


@dataclass(frozen=True)
class QuantSemantics:
    """How a runtime maps float to integer codes (QuantizeLinear / fake-quant) and back."""

    scale_op: ScaleOp = ScaleOp.DIVIDE
    zero_point: ZeroPointEntry = ZeroPointEntry.AFTER_ROUNDING
    precision: Precision = Precision.FLOAT32  # precision of x/s (and of the scale itself)
    rounding: Rounding = Rounding.HALF_EVEN
    nan: NaNPolicy = NaNPolicy.QMIN
    clamp: ClampOrder = ClampOrder.CLAMP_THEN_CAST
    dequant_precision: Precision = Precision.FLOAT32  # precision of (q - zp) * s
    # precision at which the scale is taken and 1/s computed before it is rounded to ``precision``
    # (None: ``precision``; FLOAT64 keeps a double scale as given, e.g. PT2E's 1.0 / scale)
    reciprocal_precision: Precision | None = None
    form: QuantForm = QuantForm.SCALE_ZP
    range_formula: RangeFormula = RangeFormula.SPEC  # used when form is RANGE and by fake_quantize_range
    dequant_form: DequantForm = DequantForm.PRODUCT  # (H1) dequantize only; fake-quant keeps its form


@dataclass(frozen=True)
class KernelSemantics:
    """How a runtime's integer kernels accumulate and requantize."""

    accumulation: Accumulation = Accumulation.EXACT
    requantization: Requantization = Requantization.FLOAT_MULTIPLIER
    rounding: Rounding = Rounding.HALF_EVEN
    # --- added by the kernels author (qverify.reference.kernels / graph) ---
    # precision in which the real multiplier sa*sw/sy is computed before requantization uses it
    multiplier_precision: Precision = Precision.FLOAT32
    # order of the conv reduction axis K in the kernel's memory layout (pairs follow it)
    conv_k_order: ConvKOrder = ConvKOrder.CIN_KH_KW
    # the runtime rewrites DQ -> Conv/MatMul/Gemm -> Q into one integer kernel (QLinearConv/MatMul)
    fuse_qdq: bool = False
    # ... also when the activation is int8 (False: int8 activations stay on the float path)
    fuse_int8_activations: bool = True
    # where int8 activations do not fuse: those of an in-graph QuantizeLinear -> DequantizeLinear pair
    # (scalar constant zero points, the Q feeding only that DQ) are first rewritten to uint8 with zero
    # point + 128 (the same codes + 128), so they fuse as uint8 (onnxruntime's QDQS8ToU8Transformer)
    int8_qdq_to_uint8: bool = False
    # DQ(a) + DQ(b) -> Q runs as one QLinearAdd (kernels.qlinear_add) instead of a float Add
    fuse_qdq_add: bool = False
    # DQ -> GlobalAveragePool -> Q runs as kernels.qlinear_global_average_pool (integer sum)
    fuse_qdq_global_average_pool: bool = False
    # DQ -> AveragePool -> Q runs as one pool: each window summed in float32 in kernel order, divided
    # by the count, then rne(avg / sy + zy) with the zero point added before rounding
    fuse_qdq_average_pool: bool = False
    # --- added by G1 (fused average pool) ---
    # where DQ -> AveragePool -> Q fuses: a pool whose kernel equals the input's spatial shape and whose
    # pads are all 0 runs the global-average integer kernel (kernels.qlinear_global_average_pool:
    # exact integer sum, multiplier sx / (sy * count)) instead of the float32 window sum
    average_pool_global_fallback: bool = False
    # where DQ -> AveragePool -> Q fuses, with count_include_pad: every window divides by the kernel size,
    # also a window that ceil_mode lets run past the end padding (ONNX counts input and pad cells only)
    average_pool_divide_by_kernel_size: bool = False
    # --- added by H2 (torch's x86 int8 engine) ---
    # where DQ -> GlobalAveragePool -> Q fuses: the pool keeps its input's scale and zero point,
    # c = sat(rne(fma(acc, f32(f32(sx/sx)/N), zx))) with acc = sum - N zx (torch's quantized
    # adaptive_avg_pool2d on channels-last tensors), and c is then moved to Q's parameters by the
    # profile's dequantize -> quantize (kernels.global_average_pool_keep_params)
    global_average_pool_keeps_input_params: bool = False
    # requantization of QLinearConv where it differs from ``requantization`` (None: the same)
    conv_requantization: Requantization | None = None
    # where DQ -> AveragePool -> Q fuses (2-D, no dilation or ceil_mode; pads only with
    # count_include_pad): the pool keeps its input's scale and zero point (torch's quantized avg_pool2d
    # on channels-last tensors): pad cells hold zx, acc = window sum - K zx (K = kernel size),
    # m = f32(f32(sx/sx)/K); channels below the largest multiple of average_pool_vector_channels
    # (the vectorised part) rne(f32(acc)*m) + zx, the rest rne(fma(acc, m, zx)); then the profile's
    # dequantize -> quantize (kernels.average_pool_keep_params)
    average_pool_keeps_input_params: bool = False
    average_pool_vector_channels: int = 16
    # --- added by G3 (dynamic quantization, qverify.quantizer.dynamic) ---
    # DynamicQuantizeLinear's uint8 activations use the reduced range [0, 127] (7 bits): torch's
    # dynamic int8 Linear (torch.ao.nn.quantized.dynamic.Linear.forward calls
    # quantized::linear_dynamic with reduce_range=True); onnxruntime uses [0, 255]
    dynamic_activation_reduce_range: bool = False
    # --- added by A (onnxruntime's float Conv) ---
    # summation order of a Conv on the float path (graph executor); EXACT for every runtime not modelled
    float_conv_sum: FloatSum = FloatSum.EXACT
    # summation order of a MatMul / Gemm on the float path (Gemm: alpha = 1, no transA, beta 1 or no C;
    # other Gemms keep the exact sum)
    float_matmul_sum: FloatSum = FloatSum.EXACT
    # a float32 AveragePool on the float path sums each window in float32 in kernel order (row-major; pad
    # cells add 0) and divides by the ONNX count in float32 (onnxruntime's MLAS pool; False: the exact
    # mean rounded once). Dilated windows with pads and count_include_pad=0 are divided by another count
    # in onnxruntime 1.32 (every element off, not an ulp): not modelled
    float_average_pool_kernel_order: bool = False
    # --- added by F (oneDNN two-step requantization) ---
    # where QLinearConv requantizes FLOAT_TWO_STEP_ZP_BEFORE: the source scale reaches the kernel as
    # f32(1/f32(1/sx)) (1/sx in float64, rounded to float32, inverted back in float32): torch's eager x86
    # conv hands ideep the reciprocal 1/sx and oneDNN gets its inverse; the bias keeps f32(sx*sw)
    conv_source_scale_round_trip: bool = False
