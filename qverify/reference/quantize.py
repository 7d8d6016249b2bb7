"""quantize / dequantize / fake_quant / fake_quantize_range, every arithmetic choice named.

Formulas (``P`` = the profile's :class:`~qverify.reference.semantics.QuantSemantics`, all
arithmetic in ``P.precision`` unless stated; ``rnd`` = ``P.rounding``):

* ``v = x / s`` (DIVIDE) or ``v = x * r`` with ``r = 1/s`` rounded to ``P.precision`` after being
  computed in ``P.reciprocal_precision`` (RECIPROCAL, FMA)
* zero point AFTER_ROUNDING: ``q = clamp(rnd(v) + zp, qmin, qmax)``;
  BEFORE_ROUNDING: ``q = clamp(rnd(v + zp), qmin, qmax)``; FMA: ``q = clamp(rnd(fma(x, r, zp)))``
  (one rounding of the exact ``x*r + zp`` to float32)
* CLAMP_THEN_CAST saturates in float; CAST_THEN_CLAMP converts to int64 first, where out-of-range
  values and NaN become int64 min (x86 "integer indefinite") and so clamp to ``qmin``
* NaN: ``P.nan`` (QMIN, QMAX, ZERO -> zp, PROPAGATE -> NaN (fake-quant only), RAISE -> InputError)
* ``dequantize``: ``y = f32((q - zp) * s)`` with the product in ``P.dequant_precision``
  (DequantForm.PRODUCT), or ``y = fma(q, s, -f32(zp*s))`` in float32 (FMA_FOLDED_ZERO_POINT)
* ``fake_quant``: ``dequantize(quantize(x))`` on ``[quant_min, quant_max]``
* RANGE form (OpenVINO): ``il = s(qmin - zp)``, ``ih = s(qmax - zp)``, ``L = qmax - qmin + 1``,
  code = ``qmin + index`` of :func:`fake_quantize_range`'s formula (``P.range_formula``)

Per-tensor inputs are processed in cache-sized blocks with preallocated buffers; per-axis and
blocked parameters broadcast over the whole array.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qverify.errors import InputError
from qverify.reference import _checks
from qverify.reference._checks import FLOAT_DTYPES, QType
from qverify.reference.semantics import (
    ClampOrder,
    DequantForm,
    NaNPolicy,
    Precision,
    QuantForm,
    QuantSemantics,
    RangeFormula,
    Rounding,
    ScaleOp,
    ZeroPointEntry,
)

__all__ = ["quantize", "dequantize", "fake_quant", "fake_quantize_range", "fake_quantize_ranges", "quantize_bias",
           "dequantize_bias", "fma_f32"]

BLOCK = 1 << 17  # elements per block: 512 KiB of float32 (measured: 2^17..2^18 is fastest here)
_TWO63 = 2.0**63
# NaN check of a non-empty block: NumPy's max propagates NaN; a single-threaded SIMD reduction
# (np.dot is as fast alone but may wake OpenBLAS threads, which costs on a loaded machine)
_MAX_REDUCE = np.maximum.reduce
try:  # the clip ufunc itself: np.clip's Python wrapper costs more than the loop on small blocks
    from numpy._core.umath import clip as _CLIP
except ImportError:  # pragma: no cover - older NumPy
    _CLIP = np.clip


def _profile(profile):
    from qverify.reference import profiles

    if isinstance(profile, profiles.Profile):
        return profile
    return profiles.get(profile)


def _semantics(prof, axis, block_size) -> QuantSemantics:
    if (axis is not None or block_size is not None) and prof.per_axis is not None:
        return prof.per_axis
    return prof.quant


# ---------------------------------------------------------------------------------------------
# arithmetic primitives
# ---------------------------------------------------------------------------------------------


def fma_f32(a, b, c) -> np.ndarray:
    """``f32(a*b + c)`` with a single rounding (half-to-even) for float32 a, b, c.

    ``a*b`` is exact in float64 (48 significant bits); ``a*b + c`` is summed in float64 with its
    rounding error recovered (TwoSum) and the float64 result rounded to odd, so the final rounding
    to float32 (24 bits, 53 >= 24 + 2) is the correct rounding of the exact value.
    """
    a64 = np.asarray(a, np.float32).astype(np.float64)
    p = a64 * np.asarray(b, np.float32).astype(np.float64)
    return _sum_to_f32(p, np.asarray(c, np.float32).astype(np.float64))


def _sum_to_f32(p, c) -> np.ndarray:
    """Correctly rounded ``f32(p + c)`` for float64 p, c (TwoSum, then round to odd)."""
    p = np.asarray(p, np.float64)
    shape = np.broadcast_shapes(p.shape, np.shape(c))
    p = np.array(np.broadcast_to(p, shape), ndmin=1)
    c = np.array(np.broadcast_to(np.asarray(c, np.float64), shape), ndmin=1)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the error of infinite sums
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)  # the exact rounding error of s = fl(p + c)
        # round to odd: an inexact s with an even last bit moves one ulp toward the exact value
        fix = (err != 0) & ((s.view(np.int64) & 1) == 0) & np.isfinite(s)
        if fix.any():
            s[fix] = np.nextafter(s[fix], np.where(err[fix] > 0, np.inf, -np.inf))
        return s.astype(np.float32).reshape(shape)


def _round_inplace(v: np.ndarray, rounding: Rounding, tmp: np.ndarray) -> None:
    """rnd(v) in place. HALF_EVEN: rint. HALF_AWAY: trunc(v) + sign(f)[|f| >= 1/2], f = v - trunc(v).
    HALF_UP: floor(v) + [v - floor(v) >= 1/2]. (f is exact, so no 0.49999997 + 0.5 = 1 trap.)"""
    if rounding is Rounding.HALF_EVEN:
        np.rint(v, out=v)
    elif rounding is Rounding.HALF_AWAY:
        t = np.trunc(v, out=tmp)
        with np.errstate(invalid="ignore"):
            f = np.subtract(v, t, out=v)  # inf - inf = NaN: compares false below
            step = (f >= 0.5).astype(v.dtype) - (f <= -0.5)
        np.add(t, step, out=v)
    elif rounding is Rounding.HALF_UP:
        fl = np.floor(v, out=tmp)
        with np.errstate(invalid="ignore"):
            f = np.subtract(v, fl, out=v)
            step = (f >= 0.5).astype(v.dtype)
        np.add(fl, step, out=v)
    else:  # pragma: no cover - enum is closed
        raise AssertionError(rounding)


def _reciprocal(s: np.ndarray, sem: QuantSemantics) -> np.ndarray:
    """``1/s`` in the precision of ``s`` (the reciprocal precision), rounded to ``sem.precision``."""
    with np.errstate(over="ignore"):
        return (np.asarray(1, s.dtype) / s).astype(FLOAT_DTYPES[sem.precision])


def _scale_at(scale, precision: Precision, par, x_shape, axis, block_size) -> np.ndarray:
    """The scale as given, taken at ``precision`` (a double scale stays double where a runtime
    keeps it so), in the layout of ``par.scale``."""
    s = _checks.check_scale(scale, precision)
    if block_size is None:
        return s.reshape(par.scale.shape)
    return _checks.param_layout(s, x_shape, axis, block_size, "scale")[0]


def _bounds(sem: QuantSemantics, zp, qmin: int, qmax: int):
    """Clamp bounds in the coordinates ``_centered_codes`` clamps in (centered when the zero point
    is added after rounding, codes otherwise), in zp's dtype."""
    zp = np.asarray(zp)
    if sem.zero_point is ZeroPointEntry.AFTER_ROUNDING and sem.clamp is ClampOrder.CLAMP_THEN_CAST:
        lo, hi = qmin - zp, qmax - zp
    else:
        lo, hi = np.full_like(zp, qmin), np.full_like(zp, qmax)
    return (lo[()], hi[()]) if zp.ndim == 0 else (lo, hi)


def _centered_codes(x, s, zp, qmin: int, qmax: int, sem: QuantSemantics, buf, tmp, bounds) -> np.ndarray:
    """Write ``q - zp`` (exact integers, as floats in ``sem.precision``; NaN only under PROPAGATE)
    into ``buf`` for the float block ``x``. ``s`` is the scale (DIVIDE) or the reciprocal
    (RECIPROCAL / FMA), already in the compute dtype; ``zp`` is a float of the compute dtype;
    ``bounds`` from :func:`_bounds`. Scalars should come pre-broadcast to the block (NumPy's
    contiguous-array loops are several times faster than its scalar-operand loops)."""
    ft = buf.dtype
    if sem.zero_point is ZeroPointEntry.FMA:
        # float32 only (checked by the profile): x*r exact in float64, one rounding of x*r + zp
        p = np.multiply(np.asarray(x, np.float32), s, out=tmp, dtype=np.float64)
        buf[...] = _sum_to_f32(p, np.asarray(zp, np.float64))
    elif sem.scale_op is ScaleOp.DIVIDE:
        np.divide(x, s, out=buf, dtype=ft)
    else:
        np.multiply(x, s, out=buf, dtype=ft)
    if sem.zero_point is ZeroPointEntry.BEFORE_ROUNDING:
        np.add(buf, zp, out=buf)
    rtmp = tmp if tmp.dtype == ft else np.empty_like(buf)
    _round_inplace(buf, sem.rounding, rtmp)
    after = sem.zero_point is ZeroPointEntry.AFTER_ROUNDING
    lo, hi = bounds
    if sem.clamp is ClampOrder.CAST_THEN_CLAMP:
        if after:
            np.add(buf, zp, out=buf)
        _apply_nan(buf, sem, zp, qmin, qmax)
        with np.errstate(invalid="ignore"):
            wild = ~(np.abs(buf) < _TWO63)  # NaN too (only left under PROPAGATE/RAISE)
        if sem.nan in (NaNPolicy.PROPAGATE, NaNPolicy.RAISE):
            wild &= ~np.isnan(buf)
        buf[wild] = qmin
        np.clip(buf, lo, hi, out=buf)
        return np.subtract(buf, zp, out=buf)
    np.clip(buf, lo, hi, out=buf)  # NaN propagates through clip; _apply_nan finds it cheaply
    _apply_nan(buf, sem, 0 if after else zp, lo, hi)
    return buf if after else np.subtract(buf, zp, out=buf)


def _apply_nan(buf, sem: QuantSemantics, zero_value, qmin, qmax) -> None:
    """Replace NaN in ``buf`` per ``sem.nan`` with ``qmin``/``qmax``/``zero_value`` (in the
    coordinates of ``buf``); PROPAGATE leaves it; RAISE refuses."""
    if sem.nan is NaNPolicy.PROPAGATE:
        return
    # sum of squares is NaN iff some entry is NaN (inf squares to inf; no inf - inf): one fast
    # in-cache pass instead of a mask when there is no NaN
    flat = buf.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isnan(np.dot(flat, flat)):
            return
    nan = np.isnan(buf)
    if sem.nan is NaNPolicy.RAISE:
        raise InputError(
            "x contains NaN, which this profile leaves undefined",
            "remove NaN from x, or pass a profile whose NaN policy is defined (e.g. 'onnxruntime')",
        )
    fill = {NaNPolicy.ZERO: zero_value, NaNPolicy.QMIN: qmin, NaNPolicy.QMAX: qmax}[sem.nan]
    np.copyto(buf, np.broadcast_to(fill, buf.shape), where=nan, casting="unsafe")


# ---------------------------------------------------------------------------------------------
# parameter preparation
# ---------------------------------------------------------------------------------------------


class _Params:
    """Validated scale / zero point, shaped to broadcast against x, in the compute dtype."""

    def __init__(self, x_shape, scale, zero_point, qmin, qmax, axis, block_size, precision, what=""):
        s = _checks.check_scale(scale, precision)
        zp = _checks.check_zero_point(zero_point, qmin, qmax, what=what)
        self.scale, self.axis = _checks.param_layout(s, x_shape, axis, block_size, "scale")
        zp_arr, _ = (
            _checks.param_layout(zp, x_shape, axis, block_size, "zero_point")
            if zp.size != 1 or block_size is not None and zp.ndim == len(x_shape)
            else (zp.reshape(()), None)
        )
        if zp.size != 1 and zp.size != s.size:
            raise InputError(
                f"zero_point has {zp.size} values but scale has {s.size}", "pass one zero_point per scale"
            )
        self.zp = zp_arr
        self.per_tensor = self.scale.ndim == 0 and self.zp.ndim == 0


def _blocks(n: int):
    for start in range(0, n, BLOCK):
        yield slice(start, min(n, start + BLOCK))


def _check_symmetric(prof, zp: np.ndarray) -> None:
    if getattr(prof, "symmetric_only", False) and np.any(zp != 0):
        raise InputError(
            f"profile {prof.name!r} supports only zero_point 0 (symmetric), got {zp.ravel()[:4].tolist()}",
            "pass zero_point=0 (symmetric quantization) for this profile",
        )


def _check_blocks(prof, x_shape, axis, block_size) -> None:
    if block_size is None:
        return
    ax = _checks.check_axis(axis, len(x_shape)) if axis is not None else None
    if ax is not None and not getattr(prof, "block_remainder", True) and x_shape[ax] % int(block_size):
        raise InputError(
            f"profile {prof.name!r} needs axis length {x_shape[ax]} to be a multiple of block_size={block_size}",
            "pad the input or choose a block_size that divides it",
        )


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def quantize(
    x, scale, zero_point=0, *, dtype="int8", axis=None, block_size=None, profile="onnx",
    quant_min=None, quant_max=None,
):
    """Float -> integer codes: ``clamp(rnd(x / scale) + zero_point, qmin, qmax)`` as the profile
    computes it (see the module docstring).

    x: float array or Python float(s). scale: > 0, scalar (per-tensor), 1-D (per-axis along
    ``axis``) or blocked (``block_size`` elements per scale along ``axis``, ONNX opset 21; the last
    block may be short unless the profile forbids it). zero_point: default 0, same layout as scale.
    dtype: default "int8"; also uint8, int16, uint16, int4, uint4 (int4 codes are stored in int8).
    quant_min/quant_max: default the full range of dtype; narrow range e.g. -127.
    profile: a name from ``qverify.profiles()`` or a Profile; default "onnx".
    Returns codes in the smallest NumPy integer dtype that holds them, shaped like x.
    """
    prof = _profile(profile)
    qt = _checks.resolve_dtype(dtype)
    qmin, qmax = _range(qt, quant_min, quant_max)
    x = _checks.as_float_array(x)
    sem = _semantics(prof, axis, block_size)
    codes = _quantize_float(x, scale, zero_point, qmin, qmax, qt, axis, block_size, prof, sem)
    return codes


def _range(qt: QType, quant_min, quant_max) -> tuple[int, int]:
    lo = qt.qmin if quant_min is None else quant_min
    hi = qt.qmax if quant_max is None else quant_max
    return _checks.check_quant_range(lo, hi, qt)


def _quantize_float(x, scale, zero_point, qmin, qmax, qt, axis, block_size, prof, sem, *, fake=False):
    """Codes (``fake=False``, in qt.storage) or fake-quant floats (``fake=True``, float32).
    Overflow of x/s to inf and inf - inf inside the formulas are part of the arithmetic modelled
    (IEEE results, then saturation), so their floating-point warnings are silenced here."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _quantize_float_impl(x, scale, zero_point, qmin, qmax, qt, axis, block_size, prof, sem, fake)


def _quantize_float_impl(x, scale, zero_point, qmin, qmax, qt, axis, block_size, prof, sem, fake):
    _check_blocks(prof, x.shape, axis, block_size)
    if not fake and sem.nan is NaNPolicy.PROPAGATE:
        sem = dataclasses.replace(sem, nan=NaNPolicy.RAISE)  # codes cannot hold NaN
    what = f" for quant range [{qmin}, {qmax}]"
    par = _Params(x.shape, scale, zero_point, qmin, qmax, axis, block_size, sem.precision, what)
    _check_symmetric(prof, par.zp)
    if sem.form is QuantForm.RANGE:
        return _quantize_via_range(x, par, qmin, qmax, qt, sem, fake)
    if sem.zero_point is ZeroPointEntry.FMA and sem.precision is not Precision.FLOAT32:
        raise InputError(f"profile {prof.name!r}: FMA zero point is modelled for float32 only", "fix the profile")
    ft = FLOAT_DTYPES[sem.precision]
    if sem.scale_op is ScaleOp.DIVIDE and sem.zero_point is not ZeroPointEntry.FMA:
        sc = par.scale
    else:
        sc = _reciprocal(_scale_at(scale, sem.reciprocal_precision or sem.precision, par, x.shape, axis, block_size),
                         sem)
    zpf = par.zp.astype(ft)
    dq = FLOAT_DTYPES[sem.dequant_precision]
    s_dq = _scale_at(scale, sem.dequant_precision, par, x.shape, axis, block_size)
    out = np.empty(x.shape, np.float32 if fake else qt.storage)
    if par.per_tensor:
        xf = np.ascontiguousarray(x).reshape(-1)
        of = out.reshape(-1)
        n = xf.size
        m = min(n, BLOCK)
        buf = np.empty(m, ft)
        tmp = np.empty(m, np.float64 if sem.zero_point is ZeroPointEntry.FMA else ft)
        obuf = None if ft == dq else np.empty(m, dq)
        sc_s, zp_s, sdq_s = sc[()], zpf[()], s_dq[()]
        bounds = _bounds(sem, zpf, qmin, qmax)
        if sem.zero_point is ZeroPointEntry.FMA and sem.rounding is Rounding.HALF_EVEN and (
            sem.clamp is ClampOrder.CLAMP_THEN_CAST and obuf is None
        ):
            _fma_loop(np.asarray(xf, np.float32), of, sc_s, zp_s, sdq_s, bounds, sem, fake, buf)
            return out
        if _is_simple(sem) and obuf is None:
            _simple_loop(xf if xf.dtype == ft else xf.astype(ft), of, sc_s, zp_s, sdq_s, bounds, sem, fake, buf)
            return out
        for sl in _blocks(n):
            k = sl.stop - sl.start
            b = _centered_codes(xf[sl], sc_s, zp_s, qmin, qmax, sem, buf[:k], tmp[:k], bounds)
            _emit(b, of[sl], zp_s, sdq_s, fake, obuf[:k] if obuf is not None else None)
        return out
    buf = np.empty(x.shape, ft)
    tmp = np.empty(x.shape, np.float64 if sem.zero_point is ZeroPointEntry.FMA else ft)
    b = _centered_codes(x, sc, zpf, qmin, qmax, sem, buf, tmp, _bounds(sem, zpf, qmin, qmax))
    _emit(b, out, zpf, s_dq, fake, None if ft == dq else np.empty(x.shape, dq))
    return out


def _is_simple(sem: QuantSemantics) -> bool:
    return (
        sem.rounding is Rounding.HALF_EVEN
        and sem.clamp is ClampOrder.CLAMP_THEN_CAST
        and sem.zero_point is not ZeroPointEntry.FMA
    )


def _simple_loop(xf, of, s, zp, s_dq, bounds, sem: QuantSemantics, fake: bool, buf) -> None:
    """Per-tensor HALF_EVEN / CLAMP_THEN_CAST / zero point after or before rounding: the formulas
    of :func:`_centered_codes` and :func:`_emit` with the per-block Python work cut to the ufunc
    calls (at 16M elements that overhead is comparable to the arithmetic)."""
    lo, hi = bounds
    scale_op = np.divide if sem.scale_op is ScaleOp.DIVIDE else np.multiply
    before = sem.zero_point is ZeroPointEntry.BEFORE_ROUNDING
    check_nan = sem.nan is not NaNPolicy.PROPAGATE
    rint, vmax, isnan, clip, add, mul = np.rint, _MAX_REDUCE, np.isnan, _CLIP, np.add, np.multiply
    # fake-quant in the output's own dtype: work in the output block itself. Its pages are fresh
    # (first touched here, zeroed by the kernel into the cache), so a separate buffer would only
    # add a third block competing for L2 with the input and output.
    in_place = fake and of.dtype == buf.dtype
    n = xf.size
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        b = of[start:stop] if in_place else buf[: stop - start]
        scale_op(xf[start:stop], s, out=b)
        if before:
            add(b, zp, out=b)
        rint(b, out=b)
        clip(b, lo, hi, out=b)  # NaN survives clip, and max(b) is NaN iff some entry is
        if check_nan and isnan(vmax(b)):
            _apply_nan(b, sem, zp if before else 0, lo, hi)
        if fake:
            if before:
                np.subtract(b, zp, out=b)
            mul(b, s_dq, out=of[start:stop])
        else:
            if not before:
                add(b, zp, out=b)
            np.copyto(of[start:stop], b, casting="unsafe")


def _fma_loop(xf, of, r, zp, s_dq, bounds, sem: QuantSemantics, fake: bool, buf) -> None:
    """Per-tensor FMA zero point, fast, in float32. ``h = f32(f32(x r) + zp)`` is within
    ``e = 2**-24 (2|h| + |zp|) (1 + 2**-22)`` of the exact ``v = x r + zp``. With ``R = max(|qmin|,
    |qmax|) + 1`` and ``D = 2**-23 (3R + |zp| + 1)`` (more than twice ``e`` for ``|h| < R``):

    * ``|h| < R`` and ``|h - rint(h)| < 1/2 - D``: ``h`` is farther than ``e`` from a half-integer,
      so ``rint(v) == rint(h)``;
    * ``|h| >= R``: ``e < 1/2 + |h| - R`` for every ``|h|``, so ``v`` is beyond ``qmax + 1/2`` (or
      below ``qmin - 1/2``) like ``h``: both saturate to the same code (inf and NaN alike).

    So only entries with ``|h - rint(h)| >= 1/2 - D`` (rounded down) can differ; they are recomputed
    with :func:`fma_f32`."""
    lo, hi = bounds
    m = buf.size
    t, flag = np.empty(m, np.float32), np.empty(m, bool)
    r32, zp32 = np.float32(r), np.float32(zp)
    big = max(abs(float(lo)), abs(float(hi))) + 1
    t64 = 0.5 - 2.0**-23 * (3 * big + abs(float(zp)) + 1)
    threshold = np.float32(t64)
    if float(threshold) > t64:
        threshold = np.nextafter(threshold, np.float32(0))
    n = xf.size
    repair = []
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        k = stop - start
        xb, b, tb, fb = xf[start:stop], buf[:k], t[:k], flag[:k]
        np.multiply(xb, r32, out=b)
        np.add(b, zp32, out=b)  # h
        np.rint(b, out=tb)
        np.subtract(b, tb, out=b)  # exact; inf - inf = NaN compares False below
        np.abs(b, out=b)
        np.greater_equal(b, threshold, out=fb)  # NaN compares False: its code comes from tb
        if fb.any():
            repair.append(np.flatnonzero(fb) + start)
        _CLIP(tb, lo, hi, out=tb)
        if sem.nan is not NaNPolicy.PROPAGATE and np.isnan(_MAX_REDUCE(tb)):
            _apply_nan(tb, sem, zp, lo, hi)
        if fake:
            np.subtract(tb, zp32, out=tb)
            np.multiply(tb, s_dq, out=of[start:stop])
        else:
            np.copyto(of[start:stop], tb, casting="unsafe")
    if repair:  # near-ties, all blocks at once (one call amortises fma_f32's fixed cost)
        idx = np.concatenate(repair)
        code = np.clip(np.rint(fma_f32(xf[idx], r32, zp32)), lo, hi)
        of[idx] = (code - zp32) * s_dq if fake else code


def _emit(centered, out, zpf, s_dq, fake, obuf) -> None:
    """Codes = centered + zp; fake-quant = f32(centered * s) in the dequant precision."""
    if fake:
        if obuf is None:
            np.multiply(centered, s_dq, out=out)
        else:
            np.multiply(centered, s_dq, out=obuf)
            out[...] = obuf
    else:
        np.add(centered, zpf, out=centered)
        np.copyto(out, centered, casting="unsafe")


def fake_quantize_ranges(scale, zero_point, qmin: int, qmax: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The FakeQuantize a scale/zero-point pair becomes (ONNX Q->DQ in the RANGE form):
    ``il = f32(f32(s) * f32(qmin - zp))``, ``ih = f32(f32(s) * f32(qmax - zp))``,
    ``levels = qmax - qmin + 1``; ``scale`` and ``zero_point`` broadcast against each other."""
    f32 = np.float32
    s = np.asarray(scale).astype(f32)
    z = np.asarray(zero_point).astype(np.int64)
    il = (s * (qmin - z).astype(f32)).astype(f32)
    ih = (s * (qmax - z).astype(f32)).astype(f32)
    return il, ih, qmax - qmin + 1


def _quantize_via_range(x, par, qmin, qmax, qt, sem, fake):
    """RANGE form: FakeQuantize(il = s(qmin - zp), ih = s(qmax - zp), L = qmax - qmin + 1)."""
    f32 = np.float32
    il, ih, levels = fake_quantize_ranges(par.scale, par.zp, qmin, qmax)
    if par.per_tensor and sem.range_formula in _SCALE_SHIFT_INPUT and sem.rounding is Rounding.HALF_EVEN:
        out = np.empty(x.shape, f32 if fake else qt.storage)
        _range_loop(np.ascontiguousarray(x, f32).reshape(-1), out.reshape(-1), il[()], ih[()], levels, qmin,
                    int(par.zp), sem, fake)
        return out
    index = _range_index(np.asarray(x, f32), il, ih, levels, sem, zero_index=par.zp - qmin)
    if fake:
        return _range_output(index, il, ih, levels, sem)
    out = np.empty(x.shape, qt.storage)
    np.add(index, qmin, out=index)
    np.copyto(out, index, casting="unsafe")
    return out


def _range_loop(xf, of, il, ih, levels: int, qmin: int, zp: int, sem: QuantSemantics, fake: bool) -> None:
    """Per-tensor RangeFormula.SCALE_SHIFT in cache-sized blocks (formula in RangeFormula);
    output range = input range (a Q/DQ pair)."""
    f32 = np.float32
    lm1 = f32(levels - 1)
    with np.errstate(over="ignore"):
        isc = f32(lm1 / f32(ih - il))
        ish = f32(il * isc)
        osc, osh = _range_output_scale_shift(il, ih, levels, sem)
    zero, top, qmin_f = f32(0), lm1, f32(qmin)
    buf = np.empty(min(xf.size, BLOCK), f32)
    n = xf.size
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        b = buf[: stop - start]
        _CLIP(xf[start:stop], il, ih, out=b)
        nan = None
        if sem.nan is not NaNPolicy.PROPAGATE and np.isnan(_MAX_REDUCE(b)):
            if sem.nan is NaNPolicy.RAISE:
                _apply_nan(b, sem, 0, 0, 0)  # raises
            nan = np.isnan(b)
        np.multiply(b, isc, out=b)
        np.subtract(b, ish, out=b)
        np.rint(b, out=b)
        _CLIP(b, zero, top, out=b)
        if nan is not None:
            fill = {NaNPolicy.QMIN: 0, NaNPolicy.QMAX: levels - 1, NaNPolicy.ZERO: zp - qmin}[sem.nan]
            b[nan] = fill
        if fake:
            of[start:stop] = fma_f32(b, osc, osh)
        else:
            np.add(b, qmin_f, out=b)
            np.copyto(of[start:stop], b, casting="unsafe")


def _range_index(x, il, ih, levels, sem: QuantSemantics, zero_index=0):
    """Quantization index in [0, L-1] (float32, exact integers) per ``sem.range_formula``."""
    f32 = np.float32
    lm1 = f32(levels - 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if sem.range_formula in _SCALE_SHIFT_INPUT:
            isc = (lm1 / (ih - il)).astype(f32)
            ish = (il * isc).astype(f32)
            v = np.minimum(np.maximum(x, il), ih)
            v = (v * isc).astype(f32)
            v = (v - ish).astype(f32)
        else:
            v = ((x - il) / (ih - il)).astype(f32) * lm1
            v = v.astype(f32)
    if np.isnan(v).any():
        nan = np.isnan(v)
        if sem.nan is NaNPolicy.RAISE:
            raise InputError(
                "x contains NaN, which this profile leaves undefined", "remove NaN from x or choose another profile"
            )
        if sem.nan is not NaNPolicy.PROPAGATE:
            fill = {NaNPolicy.QMIN: 0, NaNPolicy.QMAX: levels - 1}.get(sem.nan, zero_index)
            v = np.where(nan, np.asarray(fill, f32), v)
    v = np.array(v, f32, copy=True)
    _round_inplace(v, sem.rounding, np.empty_like(v))
    if sem.range_formula is RangeFormula.SPEC:
        lo, hi = np.minimum(il, ih), np.maximum(il, ih)
        with np.errstate(invalid="ignore"):
            v = np.where(x <= lo, f32(0), np.where(x > hi, lm1, v))
    np.maximum(v, 0, out=v)
    np.minimum(v, lm1, out=v)
    return v.astype(f32)


# (H1) range formulas whose input side is SCALE_SHIFT's
_SCALE_SHIFT_INPUT = (RangeFormula.SCALE_SHIFT, RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT)
# (H1) levels -> span D of the integer range the output side is folded into (observed, openvino 2026.4)
_FOLD_SPAN = {256: 255, 255: 255, 16: 15, 15: 255}
# (H1) below this |ol| in every channel the folded zero point is 0 (measured threshold, openvino 2026.4)
_FOLD_ZERO_OL = np.float32(1e-6)
# (H1) levels -> signed integer range [lo, hi] used without a zero point when every channel has
# ol < 0 < oh with |(ol/oh - lo/hi) / min(ol/oh, lo/hi)| <= 0.002 (measured: 0.00199 signed, 0.00201 not)
_FOLD_SIGNED = {256: (-128, 127), 255: (-127, 127), 16: (-8, 7)}
_FOLD_SYMMETRY = np.float32(0.002)


def _range_output_scale_shift(ol, oh, levels: int, sem: QuantSemantics):
    """``(osc, osh)`` (float32) of ``y = fma(q, osc, osh)``. SCALE_SHIFT: ``osc = f32((oh-ol)/(L-1))``,
    ``osh = ol``. SCALE_SHIFT_FOLDED_OUTPUT, L in ``_FOLD_SPAN`` and ``oh != ol`` everywhere:
    ``A = f32((oh-ol)/D)``, ``ozp = f32(f32(-ol*D)/(oh-ol))``, ``osh = f32(-ozp*A)``,
    ``osc = f32((f32(f32(D-ozp)*A) - osh)/(L-1))``, with ``ozp = 0`` when ``|ol| < 1e-6`` in every
    channel; a signed range [lo, hi] of ``_FOLD_SIGNED`` when every channel is within
    ``_FOLD_SYMMETRY`` of its ratio, or has both ``|ol|`` and ``|oh|`` below 1e-6: ``A = f32((oh-ol)/(hi-lo))``, ``osh = f32(lo*A)``,
    ``osc = f32((f32(hi*A) - osh)/(L-1))``; otherwise as SCALE_SHIFT."""
    f32 = np.float32
    lm1 = f32(levels - 1)
    ol = np.asarray(ol, f32)
    oh = np.asarray(oh, f32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        span = (oh - ol).astype(f32)
        d = _FOLD_SPAN.get(levels)
        if sem.range_formula is RangeFormula.SCALE_SHIFT_FOLDED_OUTPUT and d is not None and np.all(span != 0):
            signed = _FOLD_SIGNED.get(levels)
            tiny = np.all(np.abs(ol) < _FOLD_ZERO_OL) and np.all(np.abs(oh) < _FOLD_ZERO_OL)
            if signed is not None and (tiny or np.all(ol < 0) and np.all(oh > 0)):
                lo, hi = f32(signed[0]), f32(signed[1])
                ratio = (ol / oh).astype(f32)
                expected = f32(lo / hi)
                dev = np.abs((ratio - expected) / np.minimum(ratio, expected))
                if tiny or np.all(dev <= _FOLD_SYMMETRY):  # a signed range without zero point
                    a = (span / f32(hi - lo)).astype(f32)
                    osh = (lo * a).astype(f32)
                    top = (hi * a).astype(f32)
                    return ((top - osh) / lm1).astype(f32), osh
            d = f32(d)
            a = (span / d).astype(f32)
            ozp = ((-ol * d).astype(f32) / span).astype(f32)
            if np.all(np.abs(ol) < _FOLD_ZERO_OL):
                ozp = np.zeros_like(ozp)  # the shift is dropped (measured: |ol| < 1e-6 in every channel)
            osh = (-ozp * a).astype(f32)
            top = ((d - ozp).astype(f32) * a).astype(f32)
            return ((top - osh) / lm1).astype(f32), osh
        return (span / lm1).astype(f32), ol


def _range_output(index, ol, oh, levels, sem: QuantSemantics):
    f32 = np.float32
    lm1 = f32(levels - 1)
    ol = np.asarray(ol, f32)
    oh = np.asarray(oh, f32)
    with np.errstate(invalid="ignore", over="ignore"):
        if sem.range_formula in _SCALE_SHIFT_INPUT:
            osc, osh = _range_output_scale_shift(ol, oh, levels, sem)
            return fma_f32(index, osc, osh)
        return (((index / lm1).astype(f32) * (oh - ol).astype(f32)).astype(f32) + ol).astype(f32)


def dequantize(q, scale, zero_point=0, *, axis=None, block_size=None, profile="onnx"):
    """Integer codes -> float32: ``f32((q - zero_point) * scale)``, the product in the profile's
    ``dequant_precision`` (or ``fma(q, scale, -f32(zero_point*scale))`` under the profile's
    ``DequantForm.FMA_FOLDED_ZERO_POINT``). Layouts of scale/zero_point as in :func:`quantize`; defaults
    zero_point=0, axis=None, block_size=None, profile="onnx". zero_point must fit q's dtype.
    """
    prof = _profile(profile)
    q = _checks.as_code_array(q)
    qt = _checks.qtype_of_codes(q)
    sem = _semantics(prof, axis, block_size)
    _check_blocks(prof, q.shape, axis, block_size)
    s = _checks.check_scale(scale, sem.dequant_precision)
    zp = _checks.check_zero_point(zero_point, qt.qmin, qt.qmax, what=f" for codes of dtype {qt.name}")
    _check_symmetric(prof, zp)
    s_b, _ = _checks.param_layout(s, q.shape, axis, block_size, "scale")
    if zp.size == 1 and not (block_size is not None and zp.ndim == q.ndim):
        zp_b = zp.reshape(())
    else:
        if zp.size != s.size:
            raise InputError(f"zero_point has {zp.size} values but scale has {s.size}", "pass one per scale")
        zp_b, _ = _checks.param_layout(zp, q.shape, axis, block_size, "zero_point")
    dq = FLOAT_DTYPES[sem.dequant_precision]
    if sem.dequant_form is DequantForm.FMA_FOLDED_ZERO_POINT:
        if sem.dequant_precision is not Precision.FLOAT32:
            raise InputError(
                f"profile {prof.name!r}: DequantForm.FMA_FOLDED_ZERO_POINT is modelled for float32 only",
                "use dequant_precision=FLOAT32 with it",
            )
        with np.errstate(over="ignore", invalid="ignore"):
            shift = -(zp_b.astype(np.float32) * s_b.astype(np.float32)).astype(np.float32)
            return fma_f32(q.astype(np.float32), s_b, shift)
    centered = np.subtract(q, zp_b, dtype=np.int64 if qt.storage.itemsize >= 2 else np.int32)
    y = np.multiply(centered, s_b, dtype=dq)
    return y.astype(np.float32, copy=False)


def fake_quant(x, scale, zero_point=0, *, quant_min, quant_max, axis=None, profile="onnx"):
    """Quantize then dequantize on ``[quant_min, quant_max]`` (both required, e.g. -128, 127):
    ``f32((clamp(rnd(x/s) + zp, quant_min, quant_max) - zp) * s)`` as the profile computes it.
    NaN follows the profile's policy (PROPAGATE keeps NaN). Defaults zero_point=0, axis=None
    (per-tensor), profile="onnx". Returns float32 shaped like x.
    """
    prof = _profile(profile)
    qmin, qmax = _checks.check_quant_range(quant_min, quant_max)
    x = _checks.as_float_array(x)
    sem = _semantics(prof, axis, None)
    qt = QType(f"[{qmin},{qmax}]", np.dtype(np.int64), qmin, qmax)
    return _quantize_float(x, scale, zero_point, qmin, qmax, qt, axis, None, prof, sem, fake=True)


def fake_quantize_range(x, input_low, input_high, output_low, output_high, levels, *, profile="openvino"):
    """OpenVINO FakeQuantize: x <= min(il, ih) -> ol; x > max(il, ih) -> oh; otherwise
    ``rnd((x - il) / (ih - il) * (L-1)) / (L-1) * (oh - ol) + ol`` in float32 (RangeFormula.SPEC),
    or the CPU plugin's precomputed scale/shift form (RangeFormula.SCALE_SHIFT), with its output side
    folded into a dequantization (SCALE_SHIFT_FOLDED_OUTPUT, profile "openvino", the default). Range arrays broadcast against x (NumPy rules). levels: int >= 2.
    Returns float32 shaped like the broadcast of x and the ranges.
    """
    prof = _profile(profile)
    x = _checks.as_float_array(x)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise InputError(f"levels={levels!r} must be an integer >= 2", "pass e.g. levels=256")
    arrs = []
    for name, v in (("input_low", input_low), ("input_high", input_high),
                    ("output_low", output_low), ("output_high", output_high)):
        a = np.asarray(v)
        if a.dtype.kind not in "fiu":
            raise InputError(f"{name} must be numeric, got dtype {a.dtype}", f"pass {name} as float32")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} contains NaN or inf", f"pass finite {name}")
        arrs.append(a)
    il, ih, ol, oh = arrs
    try:
        shape = np.broadcast_shapes(x.shape, il.shape, ih.shape, ol.shape, oh.shape)
    except ValueError:
        raise InputError(
            f"range shapes {il.shape}, {ih.shape}, {ol.shape}, {oh.shape} do not broadcast against x {x.shape}",
            "pass ranges of shape () or broadcastable to x (e.g. (C, 1, 1) for NCHW channels)",
        ) from None
    if np.any(ih == il):
        raise InputError("input_high equals input_low somewhere", "pass input_high != input_low")
    sem = prof.quant
    index = _range_index(np.asarray(x, np.float32), il, ih, int(levels), sem)
    return np.broadcast_to(_range_output(index, ol, oh, int(levels), sem), shape).astype(np.float32)


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_bias(bias, scale) -> np.ndarray:
    """int32 bias codes ``saturate_int32(rne(f32(bias) / f32(scale)))``, zero point 0.

    ``scale`` is ``f32(s_input * s_weight)`` (per tensor or per output channel, broadcast against
    ``bias``). This is the form of the int32 bias initializer in a QDQ ONNX model
    (``DequantizeLinear(b_q, s_in*s_w, 0)``) and of the bias the fused integer kernels add to their
    accumulators. NaN bias is refused (the cast is undefined).
    """
    b = np.asarray(bias)
    if b.dtype.kind != "f":
        raise InputError(f"bias must be a float array, got dtype {b.dtype}", "pass the float bias")
    b = b.astype(np.float32)
    if np.isnan(b).any():
        raise InputError("bias contains NaN", "fix the model's bias before quantizing it")
    s = np.broadcast_to(_checks.check_scale(scale, Precision.FLOAT32, name="bias scale"), b.shape)
    with np.errstate(over="ignore"):
        v = np.rint(b / s).astype(np.float64)
    return np.clip(v, _INT32_MIN, _INT32_MAX).astype(np.int32)


def dequantize_bias(codes, scale) -> np.ndarray:
    """float32 bias ``f32(codes) * f32(scale)`` of int32 bias codes (zero point 0), as
    DequantizeLinear computes it for an int32 bias initializer: the bias every runtime is given."""
    q = np.asarray(codes)
    if q.dtype != np.int32:
        raise InputError(f"bias codes must be int32, got dtype {q.dtype}", "pass quantize_bias(...) codes")
    s = np.broadcast_to(_checks.check_scale(scale, Precision.FLOAT32, name="bias scale"), q.shape)
    return (q.astype(np.float32) * s).astype(np.float32)
