"""Op families of the differential tests: how to draw an :class:`OpCase`, and what the reference
says it computes under a profile.

Hypothesis draws the structure of a case (op variant, dtypes, shape, per-tensor/per-axis, scales,
zero points, the mix of tie/saturating/non-finite values and a NumPy seed); the values themselves
come from NumPy seeded by the draw. That keeps a draw cheap (hundreds of examples per second) and
still shrinks to small shapes, simple parameters and a reproducible seed.

Backends narrow the draws through :class:`Constraints` (e.g. symmetric-only TensorRT); no family
knows a backend's name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from hypothesis import strategies as st

from qverify.backends.base import OpCase

_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
_F32_MAX = np.float32(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Constraints:
    """What a backend/variant can be given. Defaults (everything the op defines) are stated."""

    act_dtypes: tuple[str, ...] = ("uint8", "int8")  # activation / quantize output dtypes
    weight_dtypes: tuple[str, ...] = ("int8", "uint8")  # weight dtypes of integer kernels
    symmetric: bool = False  # True: every zero point is 0
    weight_symmetric: bool = False  # True: weight zero points of integer kernels are 0
    per_axis: bool = True  # per-axis (per-channel) parameters may be drawn
    nonfinite: bool = True  # NaN/inf inputs where the op defines them
    max_elements: int = 256  # bound on the activation size
    # (activation, weight, output) dtype combinations of QLinear*/QDQ ops (None: every combination
    # of act_dtypes x weight_dtypes x act_dtypes)
    qlinear_dtypes: tuple[tuple[str, str, str], ...] | None = None
    bias: bool = True  # an int32 bias may be drawn for conv / gemm
    min_scale: float = 0.0  # smaller drawn scales are raised to this (a runtime fault below it)
    note: str = ""  # why the backend narrows the draws; shown in the report row

    def combos(self) -> tuple[tuple[str, str, str], ...]:
        if self.qlinear_dtypes is not None:
            return self.qlinear_dtypes
        return tuple((a, w, y) for a in self.act_dtypes for w in self.weight_dtypes for y in self.act_dtypes)


@dataclass(frozen=True)
class Family:
    """One row of the conformance matrix per backend variant.

    ``op`` is the OpCase op the backend runs; ``cases(constraints)`` a strategy of OpCases;
    ``reference(case, profile)`` the reference output; ``lsb(case)`` the size of one LSB of the
    output (1 for integer outputs; the scale for float outputs), broadcastable to the output.
    """

    name: str
    op: str
    cases: Callable[[Constraints], st.SearchStrategy[OpCase]]
    reference: Callable[[OpCase, str], np.ndarray]
    lsb: Callable[[OpCase], Any] = field(default=lambda case: 1.0)
    description: str = ""
    # optional: reduce a failing case further after Hypothesis' shrinking (``fails(case)`` says
    # whether a candidate still fails)
    minimize: Callable[[OpCase, Callable[[OpCase], bool]], OpCase] | None = None
    # True for ops with an integer compute layer (matmul/conv), whose execution precision a
    # runtime may report (and fall back to float for)
    compute: bool = False


# ---------------------------------------------------------------------------------------------
# building blocks

# Strategies are built once and reused: constructing them inside every draw costs more than the
# draw itself (Hypothesis validates each new strategy).


@cache
def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@cache
def _pick(*options: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


@cache
def _list(elem: st.SearchStrategy[Any], n: int) -> st.SearchStrategy[list[Any]]:
    return st.lists(elem, min_size=n, max_size=n)


_BOOL = st.booleans()


def _f32(lo: float, hi: float, **kw: Any) -> st.SearchStrategy[float]:
    """Floats in [lo, hi] rounded to float32 (bounds need not be float32 numbers)."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw).map(lambda v: float(np.float32(v)))


@cache
def _scale_st(tiny_large: bool = True) -> st.SearchStrategy[float]:
    pow2 = _ints(-16, 6).map(lambda e: float(np.float32(2.0**e)))
    arbitrary = _f32(1e-4, 10.0)
    extreme = _pick(float(np.float32(1e-30)), float(np.float32(3e-8)), float(np.float32(1e5)), float(np.float32(7.3e18)))
    parts = [pow2, arbitrary] + ([extreme] if tiny_large else [])
    return st.one_of(*parts)


@cache
def _zp_st(dtype: str, symmetric: bool) -> st.SearchStrategy[int]:
    if symmetric:
        return st.just(0)
    lo, hi = _QRANGE[dtype]
    mid = (lo + hi + 1) // 2
    return st.one_of(
        _pick(0, lo, hi, mid, mid + 1, lo + 1, hi - 1),
        _ints(lo, hi).map(lambda z: z | 1 if z < hi else z),  # odd zero points
        _ints(lo, hi),
    )


_MIXES = tuple(
    (tie, near, sat, nf)
    for tie in (0.0, 0.3, 0.6, 1.0) for near in (0.0, 0.2, 0.5) for sat in (0.0, 0.1, 0.3) for nf in (0.0, 0.1)
)


def _mix(nonfinite: bool) -> st.SearchStrategy[tuple[float, float, float, float]]:
    """Fractions of (exact ties, near ties, saturating, non-finite) values: one draw."""
    return _pick(*(m for m in _MIXES if nonfinite or m[3] == 0.0))


def _uniforms(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` uniform numbers per element, element-major: element ``i`` always gets the same numbers
    whatever ``n`` is, so a shrunk example keeps the values of its first elements."""
    return rng.random((n, k)).T


def float_values(
    rng: np.random.Generator, shape: Sequence[int], scale: np.ndarray, zp: np.ndarray, dtype: str,
    mix: tuple[float, float, float, float],
) -> np.ndarray:
    """float32 values around the quantization grid of (scale, zp) (both broadcastable to shape):
    exact ties ``(k+1/2)*s``, ties moved by 1-3 ulp, in-range values, saturating values (just
    outside, far outside, float32 max) and NaN/+-inf, in the fractions ``mix``."""
    lo, hi = _QRANGE[dtype]
    shape = tuple(shape)
    n = int(np.prod(shape))
    u = _uniforms(rng, n, 11)
    s = np.broadcast_to(np.asarray(scale, np.float32), shape).ravel()
    z = np.broadcast_to(np.asarray(zp, np.int64), shape).ravel()
    k = (lo + np.floor(u[0] * (hi - lo + 1)).astype(np.int64)) - z
    kf = k.astype(np.float32)
    tie, near, sat, nf = mix
    with np.errstate(over="ignore", invalid="ignore"):
        x = ((kf + (u[1] - 0.5).astype(np.float32)) * s).astype(np.float32)
        ties = ((kf + np.float32(0.5)) * s).astype(np.float32)
        x = np.where(u[2] < tie, ties, x)
        steps = np.floor(u[3] * 7).astype(np.int64) - 3  # move by -3..3 ulp
        nudged = ties.copy()
        for _ in range(3):
            nudged = np.where(steps > 0, np.nextafter(nudged, np.float32(np.inf)), nudged)
            nudged = np.where(steps < 0, np.nextafter(nudged, np.float32(-np.inf)), nudged)
            steps = steps - np.sign(steps)
        x = np.where(u[4] < near, nudged, x)
        mag = np.array([1.5, 4.0, 1e3], np.float32)[np.minimum((u[6] * 3).astype(np.int64), 2)]
        far = np.where(u[5] < 0.5, np.float32(-1), np.float32(1)) * mag * np.float32(hi - lo) * s
        far = np.where(u[7] < 0.1, np.sign(far) * _F32_MAX, far)
        x = np.where(u[8] < sat, far, x)
        if nf:
            special = np.array([np.nan, np.inf, -np.inf], np.float32)[np.minimum((u[9] * 3).astype(np.int64), 2)]
            x = np.where(u[10] < nf, special, x)
        return np.asarray(x, np.float32).reshape(shape)


def _codes(rng: np.random.Generator, shape: Sequence[int], dtype: str, saturating: bool) -> np.ndarray:
    lo, hi = _QRANGE[dtype]
    n = int(np.prod(shape))
    u = _uniforms(rng, n, 1)[0]
    if saturating:
        ends = np.array([lo, hi] if lo < 0 else [hi, hi - 1], np.int64)
        return ends[(u * 2).astype(np.int64)].astype(dtype).reshape(shape)
    return (lo + np.floor(u * (hi - lo + 1))).astype(dtype).reshape(shape)


def _pair_saturating_weights(rng: np.random.Generator, shape: Sequence[int], dtype: str, axis: int) -> np.ndarray:
    """Weights whose adjacent pairs along ``axis`` share a sign at the type's ends, so that u8*s8
    pair sums overflow int16 when the activations are near 255."""
    lo, hi = _QRANGE[dtype]
    sign = rng.choice(np.array([-1, 1]), size=shape)
    shp = list(shape)
    n = shp[axis]
    idx = np.arange(n) // 2
    take = np.take(sign, idx, axis=axis)
    mag = np.where(take > 0, hi, lo if lo < 0 else hi)
    return mag.astype(dtype)


def _param(value: Any, dtype: str | type) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear


_DIMS = (1, 2, 3, 4, 6)
_SHAPES = tuple(sorted(
    (shape for rank in range(1, 5) for shape in np.ndindex(*([len(_DIMS)] * rank))),
    key=lambda idx: (len(idx), sum(idx)),
))


@cache
def _shapes(min_rank: int, max_rank: int) -> st.SearchStrategy[tuple[int, ...]]:
    return _pick(*(s for s in _SHAPES if min_rank <= len(s) <= max_rank))


@st.composite
def _shape_axis(draw: Any, c: Constraints, min_rank: int = 1, max_rank: int = 4) -> tuple[tuple[int, ...], int | None]:
    """A shape (one draw; small shapes first so that shrinking makes them small) and, when per-axis
    parameters are allowed and drawn, an axis."""
    idx = draw(_shapes(min_rank, max_rank))
    dims = [_DIMS[i] for i in idx]
    while int(np.prod(dims)) > c.max_elements:
        dims[int(np.argmax(dims))] //= 2
    rank = len(dims)
    per_axis = c.per_axis and draw(_BOOL)
    axis = draw(_ints(0, rank - 1)) if per_axis else None
    return tuple(dims), axis


def _draw_qparams(draw: Any, c: Constraints, dtype: str, shape: tuple[int, ...], axis: int | None):
    """Per tensor: a drawn scale and zero point. Per axis: the first channel's scale and zero point
    are drawn, the others derived from a drawn seed (scales within x1/8..x8 of the first, zero
    points anywhere in range, or all equal), which keeps the number of draws small."""
    scale = np.float32(max(draw(_scale_st()), c.min_scale))
    zp = int(draw(_zp_st(dtype, c.symmetric)))
    if axis is None:
        return scale, _param(zp, dtype)
    n = shape[axis]
    rng = np.random.default_rng(draw(_ints(0, 2**16)))
    lo, hi = _QRANGE[dtype]
    scales = np.concatenate([[scale], scale * np.exp2(rng.uniform(-3, 3, n - 1))]).astype(np.float32)
    floor = max(float(np.finfo(np.float32).tiny) * 2**24, c.min_scale)
    scales = np.maximum(scales, np.float32(floor)).astype(np.float32)
    if c.symmetric:
        zps = np.zeros(n, np.int64)
    elif draw(_BOOL):
        zps = np.full(n, zp)
    else:
        zps = np.concatenate([[zp], rng.integers(lo, hi + 1, n - 1)])
    return scales, zps.astype(dtype)


def _bshape(shape: tuple[int, ...], axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    return tuple(n if i == axis else 1 for i, n in enumerate(shape))


@st.composite
def quantize_cases(draw: Any, c: Constraints) -> OpCase:
    dtype = draw(_pick(*c.act_dtypes))
    shape, axis = draw(_shape_axis(c))
    scale, zp = _draw_qparams(draw, c, dtype, shape, axis)
    mix = draw(_mix(c.nonfinite))
    rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
    bs = _bshape(shape, axis)
    x = float_values(rng, shape, scale.reshape(bs), zp.astype(np.int64).reshape(bs), dtype, mix)
    attrs = {"axis": axis} if axis is not None else {}
    return OpCase("QuantizeLinear", [x, scale, zp], attrs)


def _quantize_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.quantize import quantize

    x, s, z = case.inputs
    return quantize(x, s, z, dtype=np.asarray(z).dtype.name, axis=case.attrs.get("axis"), profile=profile)


@st.composite
def dequantize_cases(draw: Any, c: Constraints) -> OpCase:
    dtype = draw(_pick(*c.act_dtypes))
    shape, axis = draw(_shape_axis(c))
    scale, zp = _draw_qparams(draw, c, dtype, shape, axis)
    rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
    q = _codes(rng, shape, dtype, draw(_BOOL))
    attrs = {"axis": axis} if axis is not None else {}
    return OpCase("DequantizeLinear", [q, scale, zp], attrs)


def _dequantize_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.quantize import dequantize

    q, s, z = case.inputs
    return dequantize(q, s, z, axis=case.attrs.get("axis"), profile=profile)


def _axis_lsb(case: OpCase, pos: int = 1) -> Any:
    s = np.asarray(case.inputs[pos], np.float64)
    axis = case.attrs.get("axis")
    if axis is None or s.ndim == 0:
        return s
    shape = np.asarray(case.inputs[0]).shape
    return s.reshape(_bshape(shape, axis))


def minimize_elementwise(case: OpCase, fails: Callable[[OpCase], bool]) -> OpCase:
    """For elementwise ops (input 0 the data, the rest parameters): the single element (with its
    whole per-axis channel row kept) that still fails, else ``case`` unchanged."""
    x = np.asarray(case.inputs[0])
    axis = case.attrs.get("axis")
    if x.ndim == 0 or x.size <= 1:
        return case
    for idx in np.ndindex(*x.shape):
        sl = tuple(slice(None) if i == axis else slice(j, j + 1) for i, j in enumerate(idx))
        if axis is not None and idx[axis] != 0:
            continue  # the full axis is kept: one candidate per position of the other dims
        cand = OpCase(case.op, [np.ascontiguousarray(x[sl]), *case.inputs[1:]], dict(case.attrs))
        if fails(cand):
            return cand
    return case


# ---------------------------------------------------------------------------------------------
# integer matmul / conv and their QLinear / QDQ forms


@st.composite
def _mm_operands(draw: Any, c: Constraints, dtypes: tuple[str, str] | None = None):
    a_dt, b_dt = dtypes or (draw(_pick(*c.act_dtypes)), draw(_pick(*c.weight_dtypes)))
    batch = draw(_pick((), (), (2,)))
    m, k, n = draw(_ints(1, 6)), draw(_ints(1, 40)), draw(_ints(1, 8))
    saturating = draw(_pick(False, False, True))
    rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
    a = _codes(rng, (*batch, m, k), a_dt, saturating)
    if saturating:
        b = _pair_saturating_weights(rng, (k, n), b_dt, axis=0)
    else:
        b = _codes(rng, (k, n), b_dt, False)
    return a, b, rng


@st.composite
def matmul_integer_cases(draw: Any, c: Constraints) -> OpCase:
    a, b, _ = draw(_mm_operands(c))
    az = _param(draw(_zp_st(a.dtype.name, c.symmetric)), a.dtype)
    bz = _param(draw(_zp_st(b.dtype.name, c.symmetric or c.weight_symmetric)), b.dtype)
    return OpCase("MatMulInteger", [a, b, az, bz])


def _matmul_integer_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.kernels import matmul_integer

    a, b, az, bz = case.inputs
    return matmul_integer(a, b, az, bz, profile=profile)


def _requant_scale(draw: Any, a_s: float, w_s: np.ndarray, k: int) -> np.float32:
    """An output scale that keeps results mostly in range. Tie-heavy draws make the multiplier
    ``f32(sa*sw)/sy`` an exact power of two (for the largest weight scale), so requantization
    meets exact ties."""
    base = np.float32(np.float32(a_s) * np.float32(np.max(w_s)))
    shift = draw(_ints(0, 6)) + int(np.ceil(0.5 * np.log2(max(k, 1))))
    if draw(_BOOL):
        ys = np.float32(base * np.float32(2.0**shift))
    else:
        ys = np.float32(float(base) * 2.0**shift * draw(_f32(0.5, 2.0)))
    return np.float32(max(ys, np.float32(1e-30)))


@st.composite
def qlinear_matmul_cases(draw: Any, c: Constraints, op: str = "QLinearMatMul") -> OpCase:
    a_dt, b_dt, y_dt = draw(_pick(*c.combos()))
    a, b, _ = draw(_mm_operands(c, (a_dt, b_dt)))
    a_s = np.float32(draw(_scale_st(tiny_large=False)))
    b_s = np.float32(draw(_scale_st(tiny_large=False)))
    az = _param(draw(_zp_st(a.dtype.name, c.symmetric)), a.dtype)
    bz = _param(draw(_zp_st(b.dtype.name, c.symmetric or c.weight_symmetric)), b.dtype)
    ys = _requant_scale(draw, a_s, np.asarray(b_s), a.shape[-1])
    yz = _param(draw(_zp_st(y_dt, c.symmetric)), y_dt)
    return OpCase(op, [a, a_s, az, b, b_s, bz, ys, yz])


def _qlinear_matmul_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.kernels import qlinear_matmul

    return qlinear_matmul(*case.inputs[:8], profile=profile)


@st.composite
def _conv_geometry(draw: Any, c: Constraints, min_out: int = 1):
    depthwise = draw(_BOOL)
    cin = draw(_ints(1, 6))
    group = cin if depthwise else 1
    cout = cin * draw(_ints(1, 2)) if depthwise else draw(_ints(1, 6))
    kh, kw = draw(_ints(1, 3)), draw(_ints(1, 3))
    dil = draw(_pick(1, 1, 2))
    stride = draw(_pick(1, 1, 2))
    pad = draw(_ints(0, 1))
    # input size such that the output has at least min_out rows/columns (2 for the 2x2 pools)
    lo_h = max((kh - 1) * dil + 1, (min_out - 1) * stride + (kh - 1) * dil + 1 - 2 * pad)
    lo_w = max((kw - 1) * dil + 1, (min_out - 1) * stride + (kw - 1) * dil + 1 - 2 * pad)
    h = draw(_ints(lo_h, lo_h + 5))
    w = draw(_ints(lo_w, lo_w + 5))
    attrs = {"strides": [stride, stride], "pads": [pad, pad, pad, pad], "dilations": [dil, dil], "group": group}
    return (1, cin, h, w), (cout, cin // group, kh, kw), attrs


@st.composite
def _conv_operands(draw: Any, c: Constraints, dtypes: tuple[str, str] | None = None, min_out: int = 1):
    xshape, wshape, attrs = draw(_conv_geometry(c, min_out))
    x_dt, w_dt = dtypes or (draw(_pick(*c.act_dtypes)), draw(_pick(*c.weight_dtypes)))
    saturating = draw(_pick(False, False, True))
    rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
    x = _codes(rng, xshape, x_dt, saturating)
    w = _pair_saturating_weights(rng, wshape, w_dt, axis=1) if saturating else _codes(rng, wshape, w_dt, False)
    return x, w, attrs, rng


@st.composite
def conv_integer_cases(draw: Any, c: Constraints) -> OpCase:
    x, w, attrs, _ = draw(_conv_operands(c))
    xz = _param(draw(_zp_st(x.dtype.name, c.symmetric)), x.dtype)
    wz = _param(draw(_zp_st(w.dtype.name, c.symmetric or c.weight_symmetric)), w.dtype)
    return OpCase("ConvInteger", [x, w, xz, wz], attrs)


def _conv_kw(case: OpCase) -> dict[str, Any]:
    a = case.attrs
    return {"strides": a["strides"], "pads": a["pads"], "dilations": a["dilations"], "group": a["group"]}


def _conv_integer_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.kernels import conv_integer

    x, w, xz, wz = case.inputs
    return conv_integer(x, w, xz, wz, **_conv_kw(case), profile=profile)


@st.composite
def qlinear_conv_cases(draw: Any, c: Constraints, op: str = "QLinearConv", post: tuple[str, ...] = ()) -> OpCase:
    x_dt, w_dt, y_dt = draw(_pick(*c.combos()))
    pool = any(p in ("maxpool", "avgpool") for p in post)
    x, w, attrs, rng = draw(_conv_operands(c, (x_dt, w_dt), min_out=2 if pool else 1))
    cout = w.shape[0]
    x_s = np.float32(draw(_scale_st(tiny_large=False)))
    if c.per_axis and draw(_BOOL):
        w_s = np.array(draw(_list(_scale_st(tiny_large=False), cout)), np.float32)
    else:
        w_s = np.float32(draw(_scale_st(tiny_large=False)))
    xz = _param(draw(_zp_st(x.dtype.name, c.symmetric)), x.dtype)
    # per-channel weight zero points must be 0 in every runtime in scope; per-tensor may be anything
    wz = np.zeros(cout, w.dtype) if np.ndim(w_s) else _param(draw(_zp_st(w.dtype.name, c.symmetric or c.weight_symmetric)), w.dtype)
    k = int(np.prod(w.shape[1:]))
    ys = _requant_scale(draw, x_s, np.asarray(w_s), k)
    yz = _param(draw(_zp_st(y_dt, c.symmetric)), y_dt)
    inputs: list[np.ndarray | None] = [x, x_s, xz, w, w_s, wz, ys, yz]
    if c.bias and draw(_BOOL):
        inputs.append(rng.integers(-(2**12), 2**12, size=cout).astype(np.int32))
    attrs = dict(attrs)
    if post:
        attrs["post"] = post
        if "add" in post:
            if len(inputs) == 8:
                inputs.append(None)
            inputs += _add_operand(draw, rng, c, y_dt, ys, x.shape, w.shape, attrs)
    return OpCase(op, inputs, attrs)


def _add_operand(draw, rng, c, y_dt, ys, xshape, wshape, attrs):
    from qverify.reference.kernels import conv_output_shape

    oh, ow = conv_output_shape(xshape[2:], wshape[2:], attrs["strides"], attrs["pads"], attrs["dilations"])
    r = _codes(rng, (1, wshape[0], oh, ow), y_dt, False)
    rs = np.float32(float(ys) * draw(_pick(0.5, 1.0, 2.0, 0.73)))
    rz = _param(draw(_zp_st(y_dt, c.symmetric)), y_dt)
    return [r, rs, rz]


def _qlinear_conv_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.kernels import qlinear_conv

    bias = case.inputs[8] if len(case.inputs) > 8 else None
    return qlinear_conv(*case.inputs[:8], bias, **_conv_kw(case), profile=profile)


@st.composite
def qdq_gemm_cases(draw: Any, c: Constraints) -> OpCase:
    case = draw(qlinear_matmul_cases(c, op="qdq_gemm"))
    a, a_s, az, b, b_s, bz, ys, yz = case.inputs
    a2 = a.reshape(-1, a.shape[-1])
    inputs: list[Any] = [a2, a_s, az, np.ascontiguousarray(b.T), b_s, bz, ys, yz]
    if c.bias and draw(_BOOL):
        rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
        inputs.append(rng.integers(-(2**12), 2**12, size=b.shape[1]).astype(np.int32))
    return OpCase("qdq_gemm", inputs, {})


def _qdq_graph_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.backends.onnx_graphs import cached_build
    from qverify.reference.graph import run_qdq_model

    built = cached_build(case, "constant")
    outs = run_qdq_model(built.model, built.feeds(case), profile)
    if isinstance(outs, dict):
        return np.asarray(outs[built.output_names[0]])
    return np.asarray(outs[0])


# ---------------------------------------------------------------------------------------------
# fake-quant (torch / openvino style); ONNX graphs express these as Q->DQ


@st.composite
def fake_quant_cases(draw: Any, c: Constraints) -> OpCase:
    case = draw(quantize_cases(c))
    x, s, z = case.inputs
    dtype = z.dtype.name
    lo, hi = _QRANGE[dtype]
    if draw(_BOOL) and lo < 0:
        lo = -127  # narrow range
    attrs = {"quant_min": lo, "quant_max": hi, "dtype": dtype}
    if "axis" in case.attrs:
        attrs["axis"] = case.attrs["axis"]
    return OpCase("fake_quant", [x, s, z.astype(np.int32)], attrs)


def _fake_quant_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.quantize import fake_quant

    x, s, z = case.inputs
    a = case.attrs
    return fake_quant(x, s, z, quant_min=a["quant_min"], quant_max=a["quant_max"], axis=a.get("axis"), profile=profile)


@st.composite
def fake_quantize_range_cases(draw: Any, c: Constraints) -> OpCase:
    levels = draw(_pick(256, 255, 16))
    lo = np.float32(draw(_f32(-8.0, 0.0)))
    span = np.float32(draw(_f32(1e-3, 16.0)))
    hi = np.float32(lo + span)
    same_out = draw(_BOOL)
    olo, ohi = (lo, hi) if same_out else (np.float32(draw(_f32(-4, 0))), np.float32(draw(_f32(0.1, 4))))
    shape, _ = draw(_shape_axis(Constraints(per_axis=False, max_elements=c.max_elements)))
    rng = np.random.default_rng(draw(_ints(0, 2**32 - 1)))
    step = np.float32((hi - lo) / np.float32(levels - 1))
    k = rng.integers(-2, levels + 2, size=shape).astype(np.float32)
    x = (lo + (k + np.float32(0.5)) * step).astype(np.float32)  # ties of the input grid
    mask = rng.uniform(size=shape) < 0.5
    x = np.where(mask, rng.uniform(lo - span, hi + span, size=shape).astype(np.float32), x)
    if c.nonfinite and draw(_BOOL):
        x = np.where(rng.uniform(size=shape) < 0.1, np.float32(np.inf), x)
    return OpCase("fake_quantize_range", [x, lo, hi, olo, ohi], {"levels": levels})


def _fake_quantize_range_ref(case: OpCase, profile: str) -> np.ndarray:
    from qverify.reference.quantize import fake_quantize_range

    x, il, ih, ol, oh = case.inputs
    return fake_quantize_range(x, il, ih, ol, oh, case.attrs["levels"], profile=profile)


def _fq_lsb(case: OpCase) -> Any:
    x, il, ih, ol, oh = case.inputs
    return np.abs(np.float64(oh) - np.float64(ol)) / (case.attrs["levels"] - 1)


# ---------------------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("QuantizeLinear", "QuantizeLinear", quantize_cases, _quantize_ref,
               description="float -> codes, per-tensor and per-axis, ties, saturation, NaN/inf",
               minimize=minimize_elementwise),
        Family("DequantizeLinear", "DequantizeLinear", dequantize_cases, _dequantize_ref, _axis_lsb,
               description="codes -> float", minimize=minimize_elementwise),
        Family("MatMulInteger", "MatMulInteger", matmul_integer_cases, _matmul_integer_ref,
               description="int32 accumulators incl. the int16 pair-saturation case", compute=True),
        Family("ConvInteger", "ConvInteger", conv_integer_cases, _conv_integer_ref,
               description="int32 accumulators, strides/pads/dilations/depthwise", compute=True),
        Family("QLinearMatMul", "QLinearMatMul", qlinear_matmul_cases, _qlinear_matmul_ref,
               description="integer matmul + requantization", compute=True),
        Family("QLinearConv", "QLinearConv", qlinear_conv_cases, _qlinear_conv_ref,
               description="integer conv + requantization, per-channel weights, bias, depthwise", compute=True),
        Family("qdq_conv", "qdq_conv", lambda c: qlinear_conv_cases(c, op="qdq_conv"),
               _qdq_graph_ref, description="DQ->Conv->Q", compute=True),
        Family("qdq_conv_relu", "qdq_conv", lambda c: qlinear_conv_cases(c, op="qdq_conv", post=("relu",)),
               _qdq_graph_ref, description="DQ->Conv->Relu->Q", compute=True),
        Family("qdq_conv_maxpool", "qdq_conv", lambda c: qlinear_conv_cases(c, op="qdq_conv", post=("maxpool",)),
               _qdq_graph_ref, description="DQ->Conv->Q->DQ->MaxPool->Q", compute=True),
        Family("qdq_conv_avgpool", "qdq_conv", lambda c: qlinear_conv_cases(c, op="qdq_conv", post=("avgpool",)),
               _qdq_graph_ref, description="DQ->Conv->Q->DQ->AveragePool->Q", compute=True),
        Family("qdq_conv_add", "qdq_conv", lambda c: qlinear_conv_cases(c, op="qdq_conv", post=("add",)),
               _qdq_graph_ref, description="DQ->Conv->Q->DQ, + DQ(r) -> Add -> Q", compute=True),
        Family("qdq_matmul", "qdq_matmul", lambda c: qlinear_matmul_cases(c, op="qdq_matmul"),
               _qdq_graph_ref, description="DQ->MatMul->Q", compute=True),
        Family("qdq_gemm", "qdq_gemm", qdq_gemm_cases, _qdq_graph_ref, description="DQ->Gemm(transB)->Q", compute=True),
        Family("fake_quant", "fake_quant", fake_quant_cases, _fake_quant_ref, _axis_lsb,
               description="quantize then dequantize in one op (scale/zero-point form)",
               minimize=minimize_elementwise),
        Family("fake_quantize_range", "fake_quantize_range", fake_quantize_range_cases,
               _fake_quantize_range_ref, _fq_lsb, description="range form (OpenVINO FakeQuantize)"),
    ]
}


def names() -> list[str]:
    return list(FAMILIES)


def get(name: str) -> Family:
    from qverify.errors import InputError

    if name not in FAMILIES:
        raise InputError(f"unknown op family {name!r}", f"choose from: {', '.join(FAMILIES)}")
    return FAMILIES[name]
