"""Integer kernels: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv and requantization.

Notation: ``a``, ``b`` (``x``, ``w``) integer codes, ``za``, ``zb`` zero points, ``K`` the reduction
length. Every arithmetic choice comes from a :class:`~qverify.reference.semantics.KernelSemantics`:

- accumulation ``EXACT``: ``acc = sum_k (a_k - za)(b_k - zb)``, wrapped to int32.
- accumulation ``PAIRS_INT16``: ``acc = sum_p sat16(a'_2p b_2p + a'_2p+1 b_2p+1) - zb sum a' - za' sum b
  + K za' zb`` with ``a'`` the activation as uint8 (int8 codes are offset by +128, ``za' = za + 128``)
  and ``b`` int8; pairs are adjacent along the kernel's memory order of ``K``
  (``KernelSemantics.conv_k_order`` for conv). uint8 weights have no u8*s8 instruction: exact.
- requantization, see :func:`requantize`.

Where this code and the written ONNX spec disagree for the ``onnx`` profile, the spec wins.

Exact accumulation uses float BLAS: every partial sum is an integer bounded by ``K max|a-za| max|b-zb|``;
below 2^24 (float32) or 2^53 (float64) any summation order is exact, so ``K`` is split into chunks
that stay below the bound and the chunk results are added in int64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from qverify.errors import InputError
from qverify.reference.semantics import (
    Accumulation,
    ConvKOrder,
    KernelSemantics,
    Precision,
    Requantization,
    Rounding,
)

__all__ = [
    "conv_output_shape",
    "matmul_integer",
    "conv_integer",
    "qlinear_matmul",
    "qlinear_conv",
    "qlinear_add",
    "qlinear_global_average_pool",
    "requantize",
    "round_integer",
    "kernel_semantics",
]

_CODE_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
_INT16_MIN, _INT16_MAX = -32768, 32767
_F32_EXACT = 2**24  # every integer of magnitude <= 2^24 is a float32
_F64_EXACT = 2**53
_SMALLEST_NORMAL = {np.dtype(t): float(np.finfo(t).smallest_normal) for t in (np.float32, np.float64)}


# ----------------------------------------------------------------------------------------------
# profile -> kernel semantics
# ----------------------------------------------------------------------------------------------
def kernel_semantics(profile="onnx", *, isa: str | None = None) -> KernelSemantics:
    """The :class:`KernelSemantics` of ``profile`` (a name, a ``Profile`` or a ``KernelSemantics``)
    with ``Accumulation.AUTO`` resolved by :func:`qverify.reference.cpu.resolve_accumulation`
    (``isa`` overrides detection: ``"vnni"``, ``"avx2"`` or ``"none"``; default None = detect)."""
    if isinstance(profile, KernelSemantics):
        sem = profile
    else:
        from qverify.reference import profiles as _profiles

        prof = _profiles.get(profile) if isinstance(profile, str) else profile
        sem = getattr(prof, "kernel", None)
        if not isinstance(sem, KernelSemantics):
            raise InputError(
                f"profile={profile!r} is not a profile name, Profile or KernelSemantics",
                "pass a name from qverify.profiles()",
            )
    if sem.accumulation == Accumulation.AUTO or isa is not None:
        from qverify.reference import cpu

        # resolved once per (semantics, isa, $QVERIFY_ISA): dataclasses.replace costs more than a
        # small kernel call; the key holds the semantics object itself, so an id is never reused
        key = (id(sem), isa, os.environ.get(cpu.ENV))
        hit = _RESOLVED.get(key)
        if hit is not None and hit[0] is sem:
            return hit[1]
        acc = cpu.resolve_accumulation(sem.accumulation, isa)
        resolved = _replace(sem, accumulation=Accumulation(acc))
        if len(_RESOLVED) > 256:
            _RESOLVED.clear()
        _RESOLVED[key] = (sem, resolved)
        return resolved
    return sem


_RESOLVED: dict[tuple, tuple[KernelSemantics, KernelSemantics]] = {}


def _replace(sem: KernelSemantics, **changes) -> KernelSemantics:
    import dataclasses

    return dataclasses.replace(sem, **changes)


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def _codes(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype not in _CODE_RANGE:
        raise InputError(
            f"{name} has dtype {arr.dtype}, the integer kernels take int8 or uint8 codes",
            f"quantize {name} first (qverify.quantize) or cast it with .astype(np.int8/np.uint8)",
        )
    return arr


def _zero_point(zp, dtype: np.dtype, name: str) -> np.ndarray:
    """Zero point(s) as int64, each an integer within the range of ``dtype``."""
    lo, hi = _CODE_RANGE[dtype]
    arr = np.asarray(0 if zp is None else zp)
    if arr.size == 1 and arr.dtype.kind in "iu":  # the common scalar case, same checks without reductions
        wide = arr.astype(np.int64)
        if lo <= int(wide.reshape(-1)[0]) <= hi:
            return wide
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{name} must hold integers, got {arr!r}", f"round {name} to an integer")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer, got dtype {arr.dtype}", f"pass {name} as int")
    wide = arr.astype(np.int64)
    if wide.size and (wide.min() < lo or wide.max() > hi):
        bad = int(wide.min()) if wide.min() < lo else int(wide.max())
        raise InputError(
            f"{name}={bad} is outside [{lo}, {hi}], the range of its operand's dtype {dtype}",
            f"pass {name} within [{lo}, {hi}]",
        )
    return wide


def _scale(s, name: str, precision: Precision) -> np.ndarray:
    arr = np.asarray(s)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InputError(f"{name} must be a positive float, got dtype {arr.dtype}", f"pass {name} as float")
    wide = arr.astype(np.float64)
    if wide.size == 1:  # the common scalar case: the same checks on Python floats
        w = float(wide.reshape(-1)[0])
        if math.isfinite(w) and w > 0:
            out = wide.astype(np.float32 if precision == Precision.FLOAT32 else np.float64)
            o = float(out.reshape(-1)[0])
            if math.isfinite(o) and o >= _SMALLEST_NORMAL[out.dtype]:
                return out
    if not np.all(np.isfinite(wide)) or np.any(wide <= 0):
        raise InputError(f"{name} must be finite and > 0, got {arr!r}", f"pass a positive finite {name}")
    out = wide.astype(np.float32 if precision == Precision.FLOAT32 else np.float64)
    if not np.all(np.isfinite(out)) or np.any(out < np.finfo(out.dtype).smallest_normal):
        raise InputError(f"{name}={arr!r} is not a normal {out.dtype}", f"pass {name} in the normal range")
    return out


def _out_dtype(y_zero_point, fallback: np.dtype, name: str = "y_zero_point") -> np.dtype:
    """Output code type: the dtype of ``y_zero_point`` when it is int8/uint8, else ``fallback``."""
    dt = getattr(y_zero_point, "dtype", None)
    if dt is not None and np.dtype(dt) in _CODE_RANGE:
        return np.dtype(dt)
    if dt is not None and np.dtype(dt).kind in "iu" and np.dtype(dt) not in _CODE_RANGE:
        raise InputError(
            f"{name} has dtype {np.dtype(dt)}; the output code type must be int8 or uint8",
            f"pass {name} as np.int8 or np.uint8",
        )
    return fallback


# ----------------------------------------------------------------------------------------------
# rounding (shared helper: integer rounding of a float or of a fixed-point value)
# ----------------------------------------------------------------------------------------------
def round_integer(x: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Round a float array to integral values (same dtype): ``HALF_EVEN`` rint, ``HALF_AWAY``
    ``sign(x) floor(|x| + 1/2)``, ``HALF_UP`` ``floor(x + 1/2)``; the half is compared exactly
    (``x - floor(x)`` is exact in binary floating point)."""
    rounding = Rounding(rounding)
    if rounding == Rounding.HALF_EVEN:
        return np.rint(x)
    fl = np.floor(x)
    frac = x - fl
    if rounding == Rounding.HALF_UP:
        return fl + (frac >= 0.5)
    # HALF_AWAY: ties go up for x >= 0 and down for x < 0
    up = (frac > 0.5) | ((frac == 0.5) & (x >= 0))
    return fl + up


def _shift_round(x: np.ndarray, shift: np.ndarray, rounding: Rounding) -> np.ndarray:
    """``x / 2^shift`` rounded to an integer, exactly in int64 (``shift >= 1``)."""
    q = x >> shift
    r = x - (q << shift)
    half = np.left_shift(np.int64(1), shift - 1)
    if rounding == Rounding.HALF_UP:
        return q + (r >= half)
    if rounding == Rounding.HALF_AWAY:
        return q + ((r > half) | ((r == half) & (x >= 0)))
    return q + ((r > half) | ((r == half) & ((q & 1) == 1)))


# ----------------------------------------------------------------------------------------------
# the accumulation core: batched (..., M, K) @ (..., K, N) on codes with zero points
# ----------------------------------------------------------------------------------------------
def _exact_matmul(af: np.ndarray, bf: np.ndarray, per: float) -> np.ndarray:
    """Exact ``af @ bf`` of integer-valued float32 arrays whose products are bounded by ``per``
    (float32 when one BLAS call is exact, else int64)."""
    k = af.shape[-1]
    per = max(per, 1.0)
    chunk = int(_F32_EXACT // per)
    if chunk < 64:  # products too large for float32 chunks of useful length: float64 chunks
        chunk = int(_F64_EXACT // per)
        af = af.astype(np.float64)
        bf = bf.astype(np.float64)
    if chunk >= k:
        return np.matmul(af, bf)
    out = None
    for k0 in range(0, k, chunk):
        part = np.matmul(af[..., k0 : k0 + chunk], bf[..., k0 : k0 + chunk, :]).astype(np.int64)
        out = part if out is None else out + part
    return out


def _centered_bound(codes: np.ndarray, zp: np.ndarray) -> float:
    """max |code - zp| over the dtype range of ``codes`` and the zero points ``zp``."""
    lo, hi = _CODE_RANGE[codes.dtype]
    if zp.size == 1:
        z = int(zp.reshape(-1)[0])
        return float(max(abs(hi - z), abs(z - lo)))
    return float(max(np.max(np.abs(hi - zp)), np.max(np.abs(zp - lo)))) if zp.size else float(max(-lo, hi))


def _pair_correction(au: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``sum_p sat16(t_p) - t_p`` for ``t_p = au[2p] b[2p] + au[2p+1] b[2p+1]`` (one 2-D problem;
    None when no pair can leave int16).

    ``au`` >= 0 and each product is within int16, so ``t_p > 32767`` needs ``b[2p], b[2p+1] > 0``
    and ``t_p < -32768`` needs both < 0. Per pair, only the columns whose bound (over all rows) leaves
    int16 and, among them, the rows whose bound (over those columns) does, are evaluated.
    """
    m, k = au.shape
    n = b.shape[1]
    corr = None  # (M, N) int64 once a block needs it; None: nothing saturates
    p = k // 2  # an odd last element pairs with 0: one product, |t| <= 32640, never saturates
    if p == 0:
        return corr
    a0 = np.ascontiguousarray(au[:, 0 : 2 * p : 2].T, dtype=np.int32)  # (P, M)
    a1 = np.ascontiguousarray(au[:, 1 : 2 * p : 2].T, dtype=np.int32)
    b0 = b[0 : 2 * p : 2].astype(np.int32)  # (P, N)
    b1 = b[1 : 2 * p : 2].astype(np.int32)
    am0 = a0.max(axis=1)[:, None]
    am1 = a1.max(axis=1)[:, None]
    col_hi = am0 * np.maximum(b0, 0) + am1 * np.maximum(b1, 0) > _INT16_MAX
    col_lo = am0 * np.minimum(b0, 0) + am1 * np.minimum(b1, 0) < _INT16_MIN
    for q in np.flatnonzero(col_hi.any(axis=1) | col_lo.any(axis=1)):
        r0, r1 = a0[q], a1[q]
        for cols_mask, high in ((col_hi[q], True), (col_lo[q], False)):
            cols = np.flatnonzero(cols_mask)
            if cols.size == 0:
                continue
            c0, c1 = b0[q, cols], b1[q, cols]
            if high:
                rows = np.flatnonzero(r0 * c0.max() + r1 * c1.max() > _INT16_MAX)
            else:
                rows = np.flatnonzero(r0 * c0.min() + r1 * c1.min() < _INT16_MIN)
            if rows.size == 0:
                continue
            t = np.outer(r0[rows], c0)
            t += np.outer(r1[rows], c1)
            if high:
                t -= _INT16_MAX
                np.maximum(t, 0, out=t)
            else:
                t -= _INT16_MIN
                np.minimum(t, 0, out=t)
            if corr is None:
                corr = np.zeros((m, n), np.int64)
            corr[np.ix_(rows, cols)] -= t  # sat(t) - t = -(t - bound) where t leaves int16
    return corr


def _accumulate(a: np.ndarray, b: np.ndarray, za: np.ndarray, zb: np.ndarray, acc: Accumulation) -> np.ndarray:
    """int32 accumulators of ``(a - za) @ (b - zb)``; a (..., M, K), b (..., K, N) codes,
    za broadcastable to (..., M, 1), zb to (..., 1, N) (int64)."""
    af = a.astype(np.float32)
    if za.any():
        af -= za.astype(np.float32)
    bf = b.astype(np.float32)
    if zb.any():
        bf -= zb.astype(np.float32)
    k = a.shape[-1]
    per = _centered_bound(a, za) * _centered_bound(b, zb)
    if k * per > _F32_EXACT and af.size and bf.size:  # the data may still fit one float32 call
        per = float(np.abs(af).max()) * float(np.abs(bf).max())
    out = _exact_matmul(af, bf, per)
    if acc == Accumulation.PAIRS_INT16 and b.dtype == np.int8:
        au = a.astype(np.int16) + 128 if a.dtype == np.int8 else a
        shape = np.broadcast_shapes(au.shape[:-2], b.shape[:-2])
        au_b = np.broadcast_to(au, shape + au.shape[-2:])
        b_b = np.broadcast_to(b, shape + b.shape[-2:])
        fixes = {idx: _pair_correction(au_b[idx], b_b[idx]) for idx in np.ndindex(*shape)}
        fixes = {idx: c for idx, c in fixes.items() if c is not None}
        if fixes:
            out = np.array(np.broadcast_to(out, shape + out.shape[-2:]), dtype=np.int64)
            for idx, c in fixes.items():
                out[idx] += c
    elif acc not in (Accumulation.EXACT, Accumulation.PAIRS_INT16):
        raise InputError(f"accumulation {acc!r} is unresolved", "resolve Accumulation.AUTO with kernel_semantics()")
    if out.dtype == np.float64:
        out = out.astype(np.int64)
    return out.astype(np.int32)  # two's-complement wrap, as an int32 accumulator does


# ----------------------------------------------------------------------------------------------
# MatMulInteger / QLinearMatMul
# ----------------------------------------------------------------------------------------------
def _matmul_operands(a, b, a_zero_point, b_zero_point):
    a = _codes(a, "a")
    b = _codes(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise InputError("matmul operands must have at least 1 dimension", "pass arrays, not scalars")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise InputError(
            f"a {a.shape} and b {b.shape} do not chain: K={a2.shape[-1]} vs {b2.shape[-2]}",
            "pass a with shape (..., M, K) and b with shape (..., K, N)",
        )
    if a2.ndim > 2 and b2.ndim > 2:  # batch shapes on one side only always broadcast
        try:
            np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        except ValueError:
            raise InputError(
                f"batch dimensions of a {a.shape} and b {b.shape} do not broadcast", "pass broadcastable batch shapes"
            ) from None
    za = _zero_point(a_zero_point, a.dtype, "a_zero_point")
    zb = _zero_point(b_zero_point, b.dtype, "b_zero_point")
    m, n = a2.shape[-2], b2.shape[-1]
    # ONNX: a_zero_point scalar, (M,) per row, or (..., M, 1); b_zero_point scalar, (N,), (..., 1, N)
    za = _matmul_zero_point(za, m, per_row=True)
    zb = _matmul_zero_point(zb, n, per_row=False)
    return a, b, a2, b2, za, zb


def _matmul_zero_point(z: np.ndarray, length: int, *, per_row: bool) -> np.ndarray:
    """A MatMulInteger zero point in broadcastable form: a scalar, one per row of ``a``
    (``per_row``: (M,) -> (M, 1)) or one per column of ``b`` ((N,) -> (1, N))."""
    if z.size <= 1 and z.ndim == 0:
        return z
    if z.ndim == 1 and z.size == length:
        return z.reshape((length, 1) if per_row else (1, length))
    if z.ndim == 1 and z.size == 1:
        return z.reshape(())
    if z.ndim >= 2:
        one, along = (z.shape[-1], z.shape[-2]) if per_row else (z.shape[-2], z.shape[-1])
        if one == 1 and along in (1, length):
            return z
    if per_row:
        raise InputError(
            f"a_zero_point has shape {z.shape}; expected a scalar, ({length},) or (..., {length}, 1)",
            "pass one zero point per tensor or per row of a",
        )
    raise InputError(
        f"b_zero_point has shape {z.shape}; expected a scalar, ({length},) or (..., 1, {length})",
        "pass one zero point per tensor or per column of b",
    )


def _squeeze_vec(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def matmul_integer(a, b, a_zero_point=0, b_zero_point=0, *, profile="onnx", isa: str | None = None) -> np.ndarray:
    """ONNX MatMulInteger: ``y[..., m, n] = sum_k (a[..., m, k] - za) (b[..., k, n] - zb)`` as int32.

    ``a``, ``b``: int8/uint8 codes with NumPy matmul broadcasting (1-D operands as in numpy).
    ``a_zero_point`` (default 0): scalar, per row ``(M,)`` or ``(..., M, 1)``; ``b_zero_point``
    (default 0): scalar, per column ``(N,)`` or ``(..., 1, N)``. ``profile`` (default ``"onnx"``)
    chooses the accumulation (exact, or int16-saturated u8*s8 pairs along K); ``isa`` (default None:
    detect) resolves ``Accumulation.AUTO``. Returns int32 accumulators (wrapped like int32).
    """
    sem = kernel_semantics(profile, isa=isa)
    a, b, a2, b2, za, zb = _matmul_operands(a, b, a_zero_point, b_zero_point)
    return _squeeze_vec(_accumulate(a2, b2, za, zb, sem.accumulation), a, b)


def _multiplier(precision: Precision, s1: np.ndarray, s2: np.ndarray, s3: np.ndarray) -> np.ndarray:
    """``s1 * s2 / s3`` evaluated left to right in ``precision`` (each scale rounded to it first)."""
    ft = np.float32 if precision == Precision.FLOAT32 else np.float64
    return (s1.astype(ft) * s2.astype(ft)) / s3.astype(ft)


def qlinear_matmul(
    a,
    a_scale,
    a_zero_point,
    b,
    b_scale,
    b_zero_point,
    y_scale,
    y_zero_point,
    *,
    profile="onnx",
    isa: str | None = None,
) -> np.ndarray:
    """ONNX QLinearMatMul: ``y = requantize(matmul_integer(a, b, za, zb), sa*sb/sy, zy)``.

    Scales: ``a_scale`` scalar or per row ``(M,)``; ``b_scale`` scalar or per column ``(N,)``;
    ``y_scale`` scalar. Zero points as in :func:`matmul_integer`; ``y_zero_point`` scalar, its dtype
    (int8/uint8) is the output type (a Python int gives ``a``'s dtype). The multiplier is computed in
    ``KernelSemantics.multiplier_precision``; accumulation and requantization follow ``profile``
    (default ``"onnx"``); ``isa`` (default None: detect) resolves ``Accumulation.AUTO``.
    """
    sem = kernel_semantics(profile, isa=isa)
    a, b, a2, b2, za, zb = _matmul_operands(a, b, a_zero_point, b_zero_point)
    m, n = a2.shape[-2], b2.shape[-1]
    sa = _scale(a_scale, "a_scale", Precision.FLOAT64)
    sb = _scale(b_scale, "b_scale", Precision.FLOAT64)
    sy = _scale(y_scale, "y_scale", Precision.FLOAT64)
    sa = _per_axis_param(sa, m, (m, 1), "a_scale", "row of a")
    sb = _per_axis_param(sb, n, (1, n), "b_scale", "column of b")
    if sy.size != 1:
        raise InputError(f"y_scale has shape {sy.shape}; QLinearMatMul needs a scalar", "pass one y_scale")
    odt = _out_dtype(y_zero_point, a.dtype)
    zy = _zero_point(y_zero_point, odt, "y_zero_point")
    if zy.size != 1:
        raise InputError(f"y_zero_point has shape {zy.shape}; it must be a scalar", "pass one y_zero_point")
    acc = _accumulate(a2, b2, za, zb, sem.accumulation)
    if sem.requantization == Requantization.FLOAT_TWO_STEP_ZP_BEFORE:  # (F) oneDNN: scales one at a time
        y = _requantize_two_step(
            acc, _orig(a_scale, sa), _orig(b_scale, sb), _orig(y_scale, sy.reshape(())), None, zy.reshape(()),
            sem.rounding, odt,
        )
        return _squeeze_vec(y, a, b)
    mult = _multiplier(sem.multiplier_precision, _orig(a_scale, sa), _orig(b_scale, sb), _orig(y_scale, sy.reshape(())))
    y = _requantize(acc, mult, zy.reshape(()), sem, odt)
    return _squeeze_vec(y, a, b)


def _orig(user, wide: np.ndarray) -> np.ndarray:
    """The scale as given (float16/32/64), reshaped like its broadcast form ``wide``."""
    arr = np.asarray(user)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr.reshape(wide.shape)


def _per_axis_param(p: np.ndarray, length: int, shape: tuple[int, ...], name: str, what: str) -> np.ndarray:
    if p.size == 1:
        return p.reshape(())
    if p.ndim == 1 and p.size == length:
        return p.reshape(shape)
    raise InputError(f"{name} has shape {p.shape}; expected a scalar or ({length},)", f"pass one {name} per {what}")


# ----------------------------------------------------------------------------------------------
# requantization
# ----------------------------------------------------------------------------------------------
def requantize(
    acc,
    multiplier,
    zero_point,
    *,
    mode: Requantization | str,
    dtype="int8",
    rounding: Rounding | str = Rounding.HALF_EVEN,
    axis: int | None = None,
) -> np.ndarray:
    """int32 accumulators to codes of ``dtype`` (default ``"int8"``; ``"uint8"``), saturated.

    - ``FLOAT_MULTIPLIER``: ``sat(round(f32(acc) * f32(M)) + zp)``.
    - ``FLOAT64_ZP_BEFORE``: ``sat(round(f64(acc) * f64(M) + zp))``.
    - ``FIXED_POINT``: ``M = q 2^-s`` with ``q = round(M 2^(31-e))`` in [2^30, 2^31] (``M = f 2^e``,
      f in [0.5, 1)), ``s = 31 - e``; ``sat(round((acc q) / 2^s) + zp)`` evaluated exactly in int64.
    - ``FLOAT_BIAS_ZP_BEFORE``: ``sat(round(f32(f32(acc) * f32(M)) + zp))`` (the multiplier alone;
      with split scales and a bias see :func:`qlinear_conv`).
    - ``FLOAT_TWO_STEP_ZP_BEFORE``: given ``M`` alone the same as ``FLOAT_BIAS_ZP_BEFORE`` (with split
      scales and a bias see :func:`qlinear_conv` and :func:`qlinear_matmul`).

    ``round`` is ``rounding`` (default ``HALF_EVEN``; fixed-point runtimes use ``HALF_UP``:
    ``(x + 2^(s-1)) >> s``). ``multiplier`` is the real ``sa*sw/sy``: a scalar, an array that
    broadcasts against ``acc``, or 1-D along ``axis`` (default None). ``zero_point`` (scalar) must fit
    ``dtype``.
    """
    mode = Requantization(mode)
    rounding = Rounding(rounding)
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise InputError(f"acc must hold integer accumulators, got dtype {acc.dtype}", "pass int32 accumulators")
    try:
        odt = np.dtype(dtype)
    except TypeError:
        odt = None
    if odt not in _CODE_RANGE:
        raise InputError(f"dtype={dtype!r} is not int8 or uint8", "pass dtype='int8' or 'uint8'")
    zp = _zero_point(zero_point, odt, "zero_point")
    if zp.size != 1:
        raise InputError(f"zero_point has shape {zp.shape}; it must be a scalar", "pass one zero_point")
    mult = np.asarray(multiplier)
    if mult.dtype.kind != "f" or not np.all(np.isfinite(mult)) or np.any(mult <= 0):
        raise InputError(f"multiplier must be finite positive floats, got {mult!r}", "pass sa*sw/sy > 0")
    if axis is not None:
        if not isinstance(axis, (int, np.integer)) or not -acc.ndim <= axis < acc.ndim:
            raise InputError(f"axis={axis!r} is invalid for acc with {acc.ndim} dims", f"pass axis in [-{acc.ndim}, {acc.ndim - 1}]")
        ax = int(axis) % acc.ndim
        if mult.size != 1:
            if mult.ndim != 1 or mult.size != acc.shape[ax]:
                raise InputError(
                    f"multiplier has shape {mult.shape}; expected ({acc.shape[ax]},) along axis {ax}",
                    "pass one multiplier per channel",
                )
            shape = [1] * acc.ndim
            shape[ax] = mult.size
            mult = mult.reshape(shape)
    try:
        np.broadcast_shapes(mult.shape, acc.shape)
    except ValueError:
        raise InputError(
            f"multiplier shape {mult.shape} does not broadcast against acc {acc.shape}", "pass axis=... for per-channel"
        ) from None
    sem = KernelSemantics(requantization=mode, rounding=rounding)
    return _requantize(acc, mult, zp.reshape(()), sem, odt)


def _requantize(acc: np.ndarray, mult: np.ndarray, zp: np.ndarray, sem: KernelSemantics, odt: np.dtype) -> np.ndarray:
    lo, hi = _CODE_RANGE[odt]
    mode = sem.requantization
    if mode == Requantization.FLOAT_MULTIPLIER:
        y = acc.astype(np.float32) * mult.astype(np.float32)
        y = round_integer(y, sem.rounding)
        y = np.clip(y, lo - zp, hi - zp)  # same as clipping after + zp: both are integers
        return (y.astype(np.int64) + zp).astype(odt)
    if mode == Requantization.FLOAT64_ZP_BEFORE:
        y = acc.astype(np.float64) * mult.astype(np.float64)
        y += zp
        y = np.clip(round_integer(y, sem.rounding), lo, hi)
        return y.astype(odt)
    if mode in (Requantization.FLOAT_BIAS_ZP_BEFORE, Requantization.FLOAT_TWO_STEP_ZP_BEFORE):
        # (H2, F) given M alone: sx*sw = M (two-step: sx = M, sw = 1), sy = 1, no bias
        y = (acc.astype(np.float32) * mult.astype(np.float32)).astype(np.float32) + np.float32(zp)
        return np.clip(round_integer(y.astype(np.float32), sem.rounding), lo, hi).astype(odt)
    if mode == Requantization.FIXED_POINT:
        q, s = _fixed_point_multiplier(mult.astype(np.float64))
        x = acc.astype(np.int64) * q
        left = s < 1
        if np.any(left):  # multiplier >= 2^30: shift left, saturating early (the output is 8-bit)
            x = np.where(left, np.clip(x, -(2**40), 2**40) << np.where(left, 1 - s, 0), x)
            s = np.where(left, 1, s)
        y = _shift_round(x, s, sem.rounding)
        return np.clip(y + zp, lo, hi).astype(odt)
    raise InputError(f"requantization mode {mode!r} is unknown", f"use one of {[m.value for m in Requantization]}")


def _fixed_point_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real multiplier -> (q int64 in [2^30, 2^31), s) with m ~= q 2^-s; ``s`` capped at 62."""
    f, e = np.frexp(m)  # m = f 2^e, f in [0.5, 1)
    q = np.rint(f * 2.0**31).astype(np.int64)  # in [2^30, 2^31]
    carry = q == 2**31
    q = np.where(carry, q // 2, q)
    e = e + carry
    s = (31 - e).astype(np.int64)
    over = np.maximum(s - 62, 0)  # tiny multipliers: drop low bits of q so that acc*q + 2^(s-1) fits
    q = q >> over
    s = s - over
    return q, s


# ----------------------------------------------------------------------------------------------
# ConvInteger / QLinearConv
# ----------------------------------------------------------------------------------------------
def _int_tuple(v, n: int, default: int, name: str) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    t = tuple(int(i) for i in v)
    if len(t) != n:
        raise InputError(f"{name}={list(v)} has {len(t)} entries, the conv has {n} spatial dims", f"pass {n} values")
    return t


def _conv_operands(x, w, x_zero_point, w_zero_point, strides, pads, dilations, group):
    x = _codes(x, "x")
    w = _codes(w, "w")
    if x.ndim < 3 or w.ndim != x.ndim:
        raise InputError(
            f"x {x.shape} and w {w.shape} must be (N, C, *spatial) and (M, C/group, *kernel) of equal rank >= 3",
            "pass NCHW activations and OIHW weights",
        )
    nd = x.ndim - 2
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
        raise InputError(f"group={group!r} is not a positive integer", "pass group >= 1")
    group = int(group)
    c, m = x.shape[1], w.shape[0]
    if c % group or m % group or w.shape[1] != c // group:
        raise InputError(
            f"x has {c} channels, w {w.shape} with group={group}: need C % group == 0, M % group == 0, "
            f"w.shape[1] == C/group",
            "check the weight layout (M, C/group, kh, kw) and group",
        )
    strides = _int_tuple(strides, nd, 1, "strides")
    dilations = _int_tuple(dilations, nd, 1, "dilations")
    if pads is None:
        pads = (0,) * (2 * nd)
    pads = tuple(int(p) for p in pads)
    if len(pads) != 2 * nd or min(pads) < 0:
        raise InputError(f"pads={list(pads)} must be {2 * nd} non-negative values (begins then ends)", "fix pads")
    if min(strides) < 1 or min(dilations) < 1:
        raise InputError(f"strides={strides} and dilations={dilations} must be >= 1", "fix strides/dilations")
    zx = _zero_point(x_zero_point, x.dtype, "x_zero_point")
    if zx.size != 1:
        raise InputError(f"x_zero_point has shape {zx.shape}; it must be a scalar", "pass one x_zero_point")
    zw = _zero_point(w_zero_point, w.dtype, "w_zero_point")
    if zw.size != 1 and (zw.ndim != 1 or zw.size != m):
        raise InputError(f"w_zero_point has shape {zw.shape}; expected a scalar or ({m},)", "pass one per output channel")
    out = conv_output_shape(x.shape[2:], w.shape[2:], strides, pads, dilations)
    return x, w, zx.reshape(()), zw, strides, pads, dilations, group, out


def conv_output_shape(spatial, kernel, strides, pads, dilations) -> tuple[int, ...]:
    """Spatial output size of a convolution (ONNX Conv, floor):
    ``(in_i + pad_begin_i + pad_end_i - (d_i (k_i - 1) + 1)) // s_i + 1``; ``pads`` is
    ``[begin..., end...]``. InputError when a dilated kernel is larger than the padded input."""
    nd = len(spatial)
    out = []
    for i in range(nd):
        eff = dilations[i] * (kernel[i] - 1) + 1
        size = spatial[i] + pads[i] + pads[nd + i] - eff
        if size < 0:
            raise InputError(
                f"kernel {tuple(kernel)} (dilated {eff}) is larger than padded input dim {i} "
                f"({spatial[i] + pads[i] + pads[nd + i]})",
                "pad the input or use a smaller kernel",
            )
        out.append(size // strides[i] + 1)
    return tuple(out)


def _conv_accumulate(x, w, zx, zw, strides, pads, dilations, group, out_shape, sem: KernelSemantics) -> np.ndarray:
    """int32 conv accumulators (N, M, *out) through im2col and :func:`_accumulate`."""
    nd = x.ndim - 2
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    kernel = w.shape[2:]
    if any(pads):
        width = [(0, 0), (0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)]
        x = np.pad(x, width, constant_values=x.dtype.type(zx))  # padding holds the real value 0
    eff = tuple(dilations[i] * (kernel[i] - 1) + 1 for i in range(nd))
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(None, (out_shape[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))
    sl += tuple(slice(None, None, d) for d in dilations)
    win = win[sl]  # (N, C, *out, *kernel)
    win = win.reshape((n, group, cg) + out_shape + kernel)
    wg = w.reshape((group, mg, cg) + kernel)
    sp_out = tuple(range(3, 3 + nd))
    sp_k = tuple(range(3 + nd, 3 + 2 * nd))
    k_w = tuple(range(3, 3 + nd))
    if ConvKOrder(sem.conv_k_order) == ConvKOrder.CIN_KH_KW:
        cols = win.transpose((1, 0) + sp_out + (2,) + sp_k)
        wk = wg
    else:
        cols = win.transpose((1, 0) + sp_out + sp_k + (2,))
        wk = wg.transpose((0, 1) + k_w + (2,))
    length = int(np.prod(out_shape, dtype=np.int64))
    kg = cg * int(np.prod(kernel, dtype=np.int64))
    cols = cols.reshape(group, n * length, kg)
    wk = wk.reshape(group, mg, kg).transpose(0, 2, 1)  # (G, K, Mg)
    zb = zw.reshape(group, 1, mg) if zw.size > 1 else zw.reshape(())
    acc = _accumulate(cols, wk, zx, zb, sem.accumulation)  # (G, N*L, Mg)
    acc = acc.reshape((group, n) + out_shape + (mg,))
    acc = acc.transpose((1, 0, 2 + nd) + tuple(range(2, 2 + nd)))
    return acc.reshape((n, m) + out_shape)


def conv_integer(
    x,
    w,
    x_zero_point=0,
    w_zero_point=0,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
    profile="onnx",
    isa: str | None = None,
) -> np.ndarray:
    """ONNX ConvInteger: ``y[n, m, o] = sum_{c, k} (x[n, g c, o s + k d - pad] - zx) (w[m, c, k] - zw[m])``.

    ``x`` (N, C, *spatial), ``w`` (M, C/group, *kernel) int8/uint8 codes; padded positions hold ``zx``.
    ``x_zero_point`` (default 0) scalar; ``w_zero_point`` (default 0) scalar or per output channel
    ``(M,)``. ``strides``/``dilations`` default 1, ``pads`` (begins then ends) default 0, ``group``
    default 1 (``group == C == M`` is depthwise). ``profile`` (default ``"onnx"``) chooses the
    accumulation and, for pairs, the order of K; ``isa`` (default None: detect) resolves AUTO.
    Returns int32 (N, M, *out).
    """
    sem = kernel_semantics(profile, isa=isa)
    x, w, zx, zw, strides, pads, dilations, group, out_shape = _conv_operands(
        x, w, x_zero_point, w_zero_point, strides, pads, dilations, group
    )
    return _conv_accumulate(x, w, zx, zw, strides, pads, dilations, group, out_shape, sem)


def qlinear_conv(
    x,
    x_scale,
    x_zero_point,
    w,
    w_scale,
    w_zero_point,
    y_scale,
    y_zero_point,
    bias=None,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
    profile="onnx",
    isa: str | None = None,
) -> np.ndarray:
    """ONNX QLinearConv: ``y = requantize(conv_integer(x, w, zx, zw) + bias, sx*sw/sy, zy)``.

    ``w_scale``/``w_zero_point`` scalar or per output channel ``(M,)``; ``bias`` (default None)
    int32 ``(M,)`` in units of ``sx*sw``. ``y_zero_point``'s dtype (int8/uint8) is the output type
    (a Python int gives ``x``'s dtype). Conv attributes and their defaults as in
    :func:`conv_integer`; the multiplier is computed in ``KernelSemantics.multiplier_precision``
    and requantization follows ``profile`` (default ``"onnx"``).
    """
    sem = kernel_semantics(profile, isa=isa)
    x, w, zx, zw, strides, pads, dilations, group, out_shape = _conv_operands(
        x, w, x_zero_point, w_zero_point, strides, pads, dilations, group
    )
    m = w.shape[0]
    sx = _scale(x_scale, "x_scale", Precision.FLOAT64)
    sw = _scale(w_scale, "w_scale", Precision.FLOAT64)
    sy = _scale(y_scale, "y_scale", Precision.FLOAT64)
    if sx.size != 1 or sy.size != 1:
        raise InputError("x_scale and y_scale must be scalars", "pass one scale per activation tensor")
    cshape = (1, m) + (1,) * (x.ndim - 2)
    sw = _per_axis_param(sw, m, cshape, "w_scale", "output channel")
    odt = _out_dtype(y_zero_point, x.dtype)
    zy = _zero_point(y_zero_point, odt, "y_zero_point")
    if zy.size != 1:
        raise InputError(f"y_zero_point has shape {zy.shape}; it must be a scalar", "pass one y_zero_point")
    acc = _conv_accumulate(x, w, zx, zw, strides, pads, dilations, group, out_shape, sem)
    bb = None
    if bias is not None:
        bb = np.asarray(bias)
        if bb.dtype != np.int32:
            raise InputError(f"bias has dtype {bb.dtype}; QLinearConv takes int32 bias", "quantize bias to int32 (scale sx*sw)")
        if bb.shape != (m,):
            raise InputError(f"bias has shape {bb.shape}; expected ({m},)", "pass one bias per output channel")
    if sem.conv_requantization == Requantization.FLOAT_BIAS_ZP_BEFORE:
        return _requantize_float_bias(
            acc, _orig(x_scale, sx.reshape(())), _orig(w_scale, sw), _orig(y_scale, sy.reshape(())),
            None if bb is None else bb.reshape(cshape), zy.reshape(()), sem.rounding, odt,
        )
    if (sem.conv_requantization or sem.requantization) == Requantization.FLOAT_TWO_STEP_ZP_BEFORE:  # (F)
        return _requantize_two_step(
            acc, _orig(x_scale, sx.reshape(())), _orig(w_scale, sw), _orig(y_scale, sy.reshape(())),
            None if bb is None else bb.reshape(cshape), zy.reshape(()), sem.rounding, odt,
            source_round_trip=sem.conv_source_scale_round_trip,
        )
    if bb is not None:
        acc = (acc.astype(np.int64) + bb.reshape(cshape)).astype(np.int32)  # int32 wrap
    mult = _multiplier(
        sem.multiplier_precision, _orig(x_scale, sx.reshape(())), _orig(w_scale, sw), _orig(y_scale, sy.reshape(()))
    )
    return _requantize(acc, mult, zy.reshape(()), sem, odt)


# ----------------------------------------------------------------------------------------------
# QLinearAdd (com.microsoft; what a runtime fuses DQ(a) + DQ(b) -> Q into)
# ----------------------------------------------------------------------------------------------
def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point) -> np.ndarray:
    """com.microsoft QLinearAdd as ONNX Runtime's MLAS kernel computes it, all in float32:

    ``ra = sa / sy``, ``rb = sb / sy``, ``c = zy - fma(ra, za, rb * zb)``,
    ``y = sat(rne(fma(ra, a, fma(rb, b, c))))`` (the zero points folded into one constant). A
    one-element operand is folded into the constant first: ``c' = c + rb * b`` (two roundings), then
    ``y = sat(rne(fma(ra, a, c')))`` (and symmetrically). Other shapes must be equal (the kernel's
    per-span broadcasting is not modelled). Codes int8 or uint8, one type for a, b and y
    (``y_zero_point``'s dtype, else ``a``'s); scales and zero points per tensor.
    """
    from qverify.reference.quantize import fma_f32

    a = _codes(a, "a")
    b = _codes(b, "b")
    if a.dtype != b.dtype:
        raise InputError(f"a is {a.dtype} but b is {b.dtype}", "pass both operands in the same code type")
    if a.shape != b.shape and a.size != 1 and b.size != 1:
        raise InputError(
            f"a {a.shape} and b {b.shape} differ in shape", "pass equal shapes or a one-element operand"
        )
    odt = _out_dtype(y_zero_point, a.dtype)
    if odt != a.dtype:
        raise InputError(f"y_zero_point is {odt} but a is {a.dtype}", "QLinearAdd keeps one code type")
    f32 = np.float32
    params = {}
    for name, s_, z_, dt in (("a", a_scale, a_zero_point, a.dtype), ("b", b_scale, b_zero_point, b.dtype),
                             ("y", y_scale, y_zero_point, odt)):
        sc = _scale(s_, f"{name}_scale", Precision.FLOAT32)
        zp = _zero_point(z_, dt, f"{name}_zero_point")
        if sc.size != 1 or zp.size != 1:
            raise InputError(f"{name}_scale/{name}_zero_point must be scalars", "QLinearAdd is per tensor")
        params[name] = (sc.reshape(()), f32(zp.reshape(())))
    (sa, za), (sb, zb), (sy, zy) = params["a"], params["b"], params["y"]
    ra = f32(sa / sy)
    rb = f32(sb / sy)
    const = f32(zy - fma_f32(ra, za, f32(rb * zb)))
    af, bf = a.astype(f32), b.astype(f32)
    if b.size == 1 and a.size != 1:
        v = fma_f32(ra, af, f32(const + f32(bf.reshape(()) * rb)))
    elif a.size == 1 and b.size != 1:
        v = fma_f32(rb, bf, f32(const + f32(af.reshape(()) * ra)))
    else:
        v = fma_f32(ra, af, fma_f32(rb, bf, const))
    v = v.reshape(np.broadcast_shapes(a.shape, b.shape))
    lo, hi = _CODE_RANGE[odt]
    return np.clip(np.rint(v), lo, hi).astype(odt)


def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *, profile="onnx") -> np.ndarray:
    """com.microsoft QLinearGlobalAveragePool (NCHW): an exact integer sum, then requantization.

    ``acc[n, c] = sum_hw x[n, c, h, w] - N zx`` (int32, ``N`` = number of spatial positions),
    ``y = requantize(acc, sx / (sy * N), zy)`` with the multiplier computed in
    ``KernelSemantics.multiplier_precision`` in that order and the profile's requantization
    (ONNX Runtime's MLAS kernel: float32, ``FLOAT_MULTIPLIER``). Output shape (N, C, 1, ...);
    ``y_zero_point``'s dtype is the output type (a Python int gives ``x``'s). ``profile`` default
    ``"onnx"``.
    """
    sem = kernel_semantics(profile)
    x = _codes(x, "x")
    if x.ndim < 3:
        raise InputError(f"x has shape {x.shape}; expected (N, C, *spatial)", "pass NCHW codes")
    zx = _zero_point(x_zero_point, x.dtype, "x_zero_point")
    odt = _out_dtype(y_zero_point, x.dtype)
    zy = _zero_point(y_zero_point, odt, "y_zero_point")
    sx = _scale(x_scale, "x_scale", Precision.FLOAT64)
    sy = _scale(y_scale, "y_scale", Precision.FLOAT64)
    if zx.size != 1 or zy.size != 1 or sx.size != 1 or sy.size != 1:
        raise InputError("QLinearGlobalAveragePool takes per-tensor scales and zero points", "pass scalars")
    axes = tuple(range(2, x.ndim))
    n = int(np.prod(x.shape[2:], dtype=np.int64))
    acc = (x.astype(np.int64).sum(axis=axes, keepdims=True) - n * int(zx.reshape(()))).astype(np.int32)
    ft = np.float32 if sem.multiplier_precision == Precision.FLOAT32 else np.float64
    mult = _orig(x_scale, sx.reshape(())).astype(ft) / (_orig(y_scale, sy.reshape(())).astype(ft) * ft(n))
    return _requantize(acc, np.asarray(mult), zy.reshape(()), sem, odt)


def global_average_pool_keep_params(x, x_scale, x_zero_point) -> np.ndarray:
    """Global average pool that keeps the input's parameters (torch's quantized
    ``adaptive_avg_pool2d`` to 1x1 on a channels-last tensor), NCHW codes in and out:

    ``acc = sum_hw x - N zx`` (exact), ``m = f32(f32(sx / sx) / N)``,
    ``y = sat(rne(fma(acc, m, zx)))`` in float32 (one rounding), output shape (N, C, 1, ...),
    same dtype, scale ``sx`` and zero point ``zx`` as ``x``.
    """
    from qverify.reference.quantize import fma_f32

    x = _codes(x, "x")
    if x.ndim < 3:
        raise InputError(f"x has shape {x.shape}; expected (N, C, *spatial)", "pass NCHW codes")
    zx = _zero_point(x_zero_point, x.dtype, "x_zero_point")
    sx = _scale(x_scale, "x_scale", Precision.FLOAT32)
    if zx.size != 1 or sx.size != 1:
        raise InputError("the pool takes a per-tensor scale and zero point", "pass scalars")
    axes = tuple(range(2, x.ndim))
    n = int(np.prod(x.shape[2:], dtype=np.int64))
    z = int(zx.reshape(()))
    acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - n * z
    s = sx.reshape(()).astype(np.float32)
    m = np.float32(np.float32(s / s) / np.float32(n))
    y = np.rint(fma_f32(acc.astype(np.float32), m, np.float32(z)))
    lo, hi = _CODE_RANGE[x.dtype]
    return np.clip(y, lo, hi).astype(x.dtype)


def _requantize_float_bias(acc, sx, sw, sy, bias, zp, rounding: Rounding, odt: np.dtype) -> np.ndarray:
    """``Requantization.FLOAT_BIAS_ZP_BEFORE``, all float32: ``p = f32(sx*sw)``,
    ``v = f32(f32(acc) * p) + f32(bias * p)``, ``y = sat(rne(f32(v * f32(1/sy)) + zp))``."""
    f32 = np.float32
    p = (np.asarray(sx).astype(f32) * np.asarray(sw).astype(f32)).astype(f32)
    v = (acc.astype(f32) * p).astype(f32)
    if bias is not None:
        v = (v + (bias.astype(f32) * p).astype(f32)).astype(f32)
    inv = f32(f32(1) / np.asarray(sy).astype(f32).reshape(()))
    y = ((v * inv).astype(f32) + f32(np.asarray(zp).reshape(()))).astype(f32)
    lo, hi = _CODE_RANGE[odt]
    return np.clip(round_integer(y, rounding), lo, hi).astype(odt)


def _requantize_two_step(acc, sx, sw, sy, bias, zp, rounding: Rounding, odt: np.dtype, *,
                         source_round_trip: bool = False) -> np.ndarray:
    """``Requantization.FLOAT_TWO_STEP_ZP_BEFORE``, all float32: ``v = f32(f32(f32(acc) * sx') * sw)``,
    ``v = f32(v + f32(bias * f32(sx*sw)))``, ``y = sat(rne(f32(f32(v * f32(1/sy)) + zp)))``;
    ``sx' = sx``, or ``f32(1/f32(1/sx))`` (1/sx in float64) with ``source_round_trip`` (default False)."""
    f32 = np.float32
    sx32 = np.asarray(sx).astype(f32)
    sw32 = np.asarray(sw).astype(f32)
    sxk = sx32
    if source_round_trip:
        sxk = (f32(1) / (1.0 / np.asarray(sx).astype(np.float64)).astype(f32)).astype(f32)
    v = ((acc.astype(f32) * sxk).astype(f32) * sw32).astype(f32)
    if bias is not None:
        p = (sx32 * sw32).astype(f32)
        v = (v + (bias.astype(f32) * p).astype(f32)).astype(f32)
    inv = f32(f32(1) / np.asarray(sy).astype(f32).reshape(()))
    y = ((v * inv).astype(f32) + f32(np.asarray(zp).reshape(()))).astype(f32)
    lo, hi = _CODE_RANGE[odt]
    return np.clip(round_integer(y, rounding), lo, hi).astype(odt)


def gemm_requantize_two_step(acc, sx, sw, sy, bias, zp, *, rounding: Rounding | str = Rounding.HALF_EVEN,
                             dtype="int8") -> np.ndarray:
    """(F) ``FLOAT_TWO_STEP_ZP_BEFORE`` for a Gemm's int32 accumulators ``acc`` (..., N): ``sx`` scalar,
    ``sw`` scalar or per column (N,), ``sy`` scalar, ``bias`` int32 codes of scale ``sx*sw`` (N,) or
    None (added as ``f32(bias * f32(sx*sw))`` after scaling), ``zp`` scalar; ``dtype`` (default
    ``"int8"``) the output codes, ``rounding`` (default ``HALF_EVEN``)."""
    odt = np.dtype(dtype)
    if odt not in _CODE_RANGE:
        raise InputError(f"dtype={dtype!r} is not int8 or uint8", "pass dtype='int8' or 'uint8'")
    sw = np.asarray(sw)
    sw = sw.reshape(()) if sw.size == 1 else sw.reshape(-1)
    b = None if bias is None else np.asarray(bias).reshape(-1)
    return _requantize_two_step(np.asarray(acc), np.asarray(sx).reshape(()), sw, np.asarray(sy).reshape(()), b,
                                np.asarray(zp, np.int64).reshape(()), Rounding(rounding), odt)


def average_pool_keep_params(x, x_scale, x_zero_point, kernel, strides, pads, *, vector_channels: int = 16) -> np.ndarray:
    """2-D average pool that keeps the input's parameters (torch's quantized ``avg_pool2d`` with
    ``count_include_pad`` on a channels-last tensor), NCHW codes in and out:

    pad cells hold ``zx``; ``acc = window sum - K zx`` (exact, ``K = kh*kw``),
    ``m = f32(f32(sx / sx) / K)``; channels ``c < floor(C / vector_channels) * vector_channels``:
    ``sat(rne(f32(acc) * m) + zx)``; the others ``sat(rne(fma(acc, m, zx)))`` in float32.
    ``kernel``/``strides`` are (kh, kw), ``pads`` (top, left, bottom, right); floor output size.
    ``vector_channels`` default 16.
    """
    from qverify.reference.quantize import fma_f32

    x = _codes(x, "x")
    if x.ndim != 4:
        raise InputError(f"x has shape {x.shape}; expected (N, C, H, W)", "pass NCHW codes")
    zx = _zero_point(x_zero_point, x.dtype, "x_zero_point")
    sx = _scale(x_scale, "x_scale", Precision.FLOAT32)
    if zx.size != 1 or sx.size != 1:
        raise InputError("the pool takes a per-tensor scale and zero point", "pass scalars")
    kh, kw = (int(v) for v in kernel)
    sh, sw_ = (int(v) for v in strides)
    pt, pl, pb, pr = (int(v) for v in pads)
    z = int(zx.reshape(()))
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=z)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw_ + 1
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw_ + 1 : sw_]
    k = kh * kw
    acc = (win.sum(axis=(-2, -1)) - k * z).astype(np.float32)  # exact below 2^24
    s = sx.reshape(()).astype(np.float32)
    m = np.float32(np.float32(s / s) / np.float32(k))
    vec = np.rint((acc * m).astype(np.float32)) + np.float32(z)
    tail = np.rint(fma_f32(acc, m, np.float32(z)))
    c = x.shape[1]
    split = (c // vector_channels) * vector_channels if vector_channels > 0 else 0
    y = np.where(np.arange(c).reshape(1, -1, 1, 1) < split, vec, tail)
    lo, hi = _CODE_RANGE[x.dtype]
    return np.clip(y, lo, hi).astype(x.dtype)
