"""float32 Conv as onnxruntime's CPU execution provider sums it (MLAS, NCHW layout, x86-64, one thread).

Used by :mod:`qverify.reference.graph` where ``KernelSemantics.float_conv_sum`` is
``FloatSum.MLAS`` (the float path of a Conv that does not fuse into an integer kernel).

Per image and group, with ``M`` output channels per group, ``C`` input channels per group,
``K = C * prod(kernel)`` (order: channel, then kernel rows, then kernel columns), ``N = prod(output
spatial)``, ``B[k, n]`` the im2col patch value (0 in padding) and ``A[m, k]`` the weight:

- algorithm (``MlasConvPrepare``): strides 1 and pads 0 and ``K == C``: GEMM on the input itself; 2-D,
  also dilations 1 and ``C == 1``: kernel width == input width -> GEMM with ``B`` transposed, kernel
  height == input height and width 1 -> GEMM on the input; otherwise ``M > N`` -> im2col then GEMM, else
  im2col then GEMM in segments (the same GEMM kernels, see below).
- GEMM kernel (``MlasSgemmOperation``):
  - ``M == 1`` -> ``m1``: k taken 4 at a time (then 2, then 1); each group
    ``g = ((p_k + p_k+1) + p_k+2) + p_k+3`` with ``p = f32(A B)``; ``c = g_0``, then ``c = f32(g + c)``.
  - otherwise ``N == 1`` with contiguous operands -> ``m1t`` with A and B swapped (rows = the M outputs),
    else ``m1t`` for ``M == 1`` with ``B`` transposed: 8 lanes, ``l_j = sum over k = j (mod 8)`` of
    ``f32(A B)`` in k order (float32 adds); the lanes reduced by the row's position in blocks of 4,
    then 2, then 1 rows: block of 4 ``((l0+l1)+l2)+l3 + ((l4+l5)+l6)+l7``; block of 2
    ``((l0+l2)+(l4+l6)) + ((l1+l3)+(l5+l7))``; single row ``((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))``.
  - otherwise ``fma``: K in slices of ``stride_k`` (128; halved while ``stride_k/2 >= K`` when
    ``N >= K``, doubled while ``stride_n > 16`` and ``stride_n/2 >= N`` (halving ``stride_n``, from 128)
    otherwise); per slice ``s = fma(A_k, B_k, s)`` from 0 in k order; ``c = s_0``, then ``c = f32(c + s)``.
- then ``y = f32(c + bias)``.

MatMul (``matmul_float``) and Gemm (``gemm_float``) call the same GEMM: M = 1 -> ``m1`` (``m1t`` with B
transposed), N = 1 with contiguous operands -> ``m1t`` swapped, else ``fma``; Gemm's C is the GEMM's
initial output (beta 1): ``m1`` starts its running sum from it, ``m1t`` adds it after the reduction,
``fma`` adds each K slice to it.

Not modelled: several threads (``intra_op_num_threads > 1``: the slices and row blocks follow each
thread's share), the NCHWc Conv that graph optimisation substitutes for a float Conv with constant
weights at level 'all', a MatMul/Gemm whose constant B onnxruntime prepacks (packed K slices of 256,
no M = 1 kernel), and non-x86 MLAS kernels.
"""

from __future__ import annotations

import numpy as np

from qverify.errors import InputError
from qverify.reference.quantize import fma_f32

__all__ = ["conv_float", "matmul_float", "gemm_float"]

_STRIDE = 128  # MLAS_SGEMM_STRIDEN and MLAS_SGEMM_STRIDEK
_F32 = np.float32


_F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``fma(a, b, c)`` (one rounding) for float64 ``a``, ``b`` holding float32 values and float32
    ``c``: ``a*b + c`` in float64 (the product is exact) rounded to float32, which is the correct
    rounding except where the float64 sum lands exactly on a float32 midpoint (low 29 mantissa bits
    ``1 << 28``) or in the float32 subnormal range; those elements are redone exactly
    (:func:`qverify.reference.quantize.fma_f32`)."""
    s = a * b
    s += c
    r = s.astype(_F32)
    check = (s.view(np.uint64) & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000)
    check |= np.abs(s) < 2 * _F32_MIN_NORMAL
    if check.any():
        shape = s.shape
        aa, bb, cc = (np.broadcast_to(v, shape)[check] for v in (a, b, c))
        r[check] = fma_f32(aa, bb, cc)
    return r


def _gemm_fma(a: np.ndarray, b: np.ndarray, c0: np.ndarray | None = None) -> np.ndarray:
    """a (M, K), b (..., K, N) -> (..., M, N): the blocked FMA kernel; ``c0`` the accumulated C (beta 1)."""
    m, k = a.shape
    n = b.shape[-1]
    stride_n, stride_k = _STRIDE, _STRIDE
    if n >= k:
        while stride_k // 2 >= k:
            stride_n, stride_k = stride_n * 2, stride_k // 2
    else:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_n, stride_k = stride_n // 2, stride_k * 2
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    c = c0
    for k0 in range(0, k, stride_k):
        s = np.zeros(b.shape[:-2] + (m, n), _F32)
        for kk in range(k0, min(k, k0 + stride_k)):
            s = _fma(a64[:, kk, None], b64[..., None, kk, :], s)
        c = s if c is None else (s + c).astype(_F32)
    return c


def _gemm_m1(a_row: np.ndarray, b: np.ndarray, c0: np.ndarray | None = None) -> np.ndarray:
    """a_row (K,), b (..., K, N) -> (..., N): SgemmKernelM1Avx; ``c0`` the accumulated C (beta 1)."""
    k = a_row.shape[0]
    steps = [4] * (k // 4) + ([2] if k % 4 >= 2 else []) + ([1] if k % 2 else [])
    c = c0
    i = 0
    for step in steps:
        g = (b[..., i, :] * a_row[i]).astype(_F32)
        for j in range(1, step):
            g = (g + (b[..., i + j, :] * a_row[i + j]).astype(_F32)).astype(_F32)
        c = g if c is None else (g + c).astype(_F32)
        i += step
    return c


def _gemm_m1t(vec: np.ndarray, rows: np.ndarray, c0: np.ndarray | None = None) -> np.ndarray:
    """vec (..., K), rows (..., R, K) -> (..., R): SgemmKernelM1TransposeBAvx (one dot product per row);
    ``c0`` the accumulated C (beta 1), added after the reduction."""
    k = vec.shape[-1]
    prod = (rows * vec[..., None, :]).astype(_F32)
    lanes = []
    for j in range(8):
        acc = np.zeros(prod.shape[:-1], _F32)
        for kk in range(j, k, 8):
            acc = (acc + prod[..., kk]).astype(_F32)
        lanes.append(acc)
    l0, l1, l2, l3, l4, l5, l6, l7 = lanes

    def add(x, y):
        return (x + y).astype(_F32)

    four = add(add(add(add(l0, l1), l2), l3), add(add(add(l4, l5), l6), l7))
    two = add(add(add(l0, l2), add(l4, l6)), add(add(l1, l3), add(l5, l7)))
    one = add(add(add(l0, l1), add(l2, l3)), add(add(l4, l5), add(l6, l7)))
    r = prod.shape[-2]
    pos = np.arange(r)
    n4 = 4 * (r // 4)
    which = np.where(pos < n4, 0, np.where((pos < n4 + 2) & (r % 4 >= 2), 1, 2))
    out = np.where(which == 0, four, np.where(which == 1, two, one))
    return out if c0 is None else (out + c0).astype(_F32)


def _gemm(a: np.ndarray, b: np.ndarray, *, contiguous_b: bool, transposed_b: bool = False) -> np.ndarray:
    """a (M, K) times b (..., K, N) -> (..., M, N) as MlasGemm picks its kernel (one thread)."""
    m, _ = a.shape
    n = b.shape[-1]
    if m == 1:
        if transposed_b:
            return _gemm_m1t(a[0], np.swapaxes(b, -1, -2))[..., None, :]
        return _gemm_m1(a[0], b)[..., None, :]
    if n == 1 and contiguous_b:
        return _gemm_m1t(b[..., :, 0], a)[..., None]
    return _gemm_fma(a, b)  # a transposed B is packed first: the same k order


def conv_float(x, w, b=None, *, strides, pads, dilations, group: int = 1) -> np.ndarray:
    """float32 Conv (NCHW, 1-D/2-D/3-D) in MLAS's order; see the module docstring.

    x (N, C, *spatial), w (M, C/group, *kernel), b (M,) or None; strides, dilations per spatial axis;
    pads ``[begin..., end...]``; group default 1. Inputs are taken as float32.
    """
    x = np.asarray(x, _F32)
    w = np.asarray(w, _F32)
    nd = x.ndim - 2
    if nd not in (1, 2, 3) or w.ndim != x.ndim:
        raise InputError(f"conv_float: x {x.shape} and w {w.shape} are not an (N, C, *spatial) / (M, C/group, "
                         "*kernel) pair with 1-3 spatial axes", "pass NCHW-style x and OIHW-style w of equal rank")
    if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise InputError(f"conv_float: group={group} does not fit x channels {x.shape[1]} and w {w.shape}",
                         "C must equal w.shape[1] * group and M a multiple of group")
    if len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise InputError(f"conv_float: strides {strides}, dilations {dilations}, pads {pads} for {nd} spatial axes",
                         f"give {nd} strides and dilations and {2 * nd} pads (begins, then ends)")
    kernel = w.shape[2:]
    n_img, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    out_sp = tuple(
        (xp.shape[2 + i] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i] + 1 for i in range(nd)
    )
    n_out = int(np.prod(out_sp))
    k_len = cg * int(np.prod(kernel))
    plain = all(s == 1 for s in strides) and all(p == 0 for p in pads)
    # geometry as MlasConvPrepare sees it (1-D promoted to 2-D)
    in_sp2 = (1,) + tuple(x.shape[2:]) if nd == 1 else tuple(x.shape[2:])
    k_sp2 = (1,) + tuple(kernel) if nd == 1 else tuple(kernel)
    dims2 = 2 if nd <= 2 else nd
    out = np.empty((n_img, m) + out_sp, _F32)
    # im2col patches: (N, C, *kernel, *out) -> (N, C*prod(kernel), prod(out))
    idx = np.indices(out_sp).reshape(nd, -1)
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        offs = np.indices(kernel).reshape(nd, -1)
        cols = np.empty((n_img, cg, offs.shape[1], n_out), _F32)
        for t in range(offs.shape[1]):
            sl = tuple(idx[i] * strides[i] + offs[i, t] * dilations[i] for i in range(nd))
            cols[:, :, t, :] = xs[(slice(None), slice(None)) + sl]
        cols = cols.reshape(n_img, k_len, n_out)
        a = w[g * mg:(g + 1) * mg].reshape(mg, k_len)
        transposed = False
        contiguous = True
        if plain and k_len == cg:
            pass  # pointwise: the input is the GEMM's B (ldb = N)
        elif plain and dims2 == 2 and all(d == 1 for d in dilations) and cg == 1 and k_sp2[1] == in_sp2[1]:
            transposed = True  # B is the input read as (N, K) rows of stride input width
            contiguous = in_sp2[1] == 1
        elif plain and dims2 == 2 and all(d == 1 for d in dilations) and cg == 1 and (
            k_sp2[0] == in_sp2[0] and k_sp2[1] == 1
        ):
            contiguous = in_sp2[1] == 1  # ldb = input width
        elif mg <= n_out:
            contiguous = False  # segmented: MlasSgemmOperation with ldc = N; M == 1 takes m1 first
        y = _gemm(a, cols, contiguous_b=contiguous and n_out == 1, transposed_b=transposed)
        out[:, g * mg:(g + 1) * mg] = y.reshape((n_img, mg) + out_sp)
    if b is not None:
        out = (out + np.asarray(b, _F32).reshape((1, m) + (1,) * nd)).astype(_F32)
    return out


def _sgemm(a: np.ndarray, b: np.ndarray, c0: np.ndarray | None, *, trans_b: bool) -> np.ndarray:
    """One MlasGemm (TransA none, alpha 1): a (M, K), b (K, N) or, with ``trans_b``, (N, K) -> (M, N)."""
    m, k = a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    ldb = k if trans_b else n
    if m == 1:
        if trans_b:
            return _gemm_m1t(a[0], b, None if c0 is None else c0[0])[None]
        return _gemm_m1(a[0], b, None if c0 is None else c0[0])[None]
    if n == 1 and ldb == 1:  # ldc == N == 1: the M = 1 kernel with A and B swapped
        vec = b[:, 0] if not trans_b else b[0]
        return _gemm_m1t(vec, a, None if c0 is None else c0[:, 0])[:, None]
    return _gemm_fma(a, b.T if trans_b else b, c0)


def matmul_float(a, b) -> np.ndarray:
    """float32 MatMul (numpy broadcasting rules, 1-D operands promoted) in MLAS's order: a 2-D ``b`` is one
    GEMM with every leading dimension of ``a`` folded into M; otherwise one GEMM per broadcast batch."""
    a = np.asarray(a, _F32)
    b = np.asarray(b, _F32)
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise InputError(f"matmul_float: shapes {a.shape} and {b.shape} do not multiply",
                         "the last axis of a must equal the second-to-last of b")
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if b2.ndim == 2:
        lead = a2.shape[:-2]
        y = _sgemm(a2.reshape(-1, a2.shape[-1]), b2, None, trans_b=False).reshape(*lead, a2.shape[-2], b2.shape[1])
    else:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        ab = np.broadcast_to(a2, batch + a2.shape[-2:])
        bb = np.broadcast_to(b2, batch + b2.shape[-2:])
        y = np.empty(batch + (a2.shape[-2], b2.shape[-1]), _F32)
        for i in np.ndindex(*batch):
            y[i] = _sgemm(np.ascontiguousarray(ab[i]), np.ascontiguousarray(bb[i]), None, trans_b=False)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


def gemm_float(a, b, c=None, *, trans_b: bool = False) -> np.ndarray:
    """float32 Gemm with alpha = beta = 1 and A not transposed (``trans_b`` default False): C broadcast to
    (M, N) is the GEMM's initial output (beta 1, accumulated), else the product alone."""
    a = np.asarray(a, _F32)
    b = np.asarray(b, _F32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != (b.shape[1] if trans_b else b.shape[0]):
        raise InputError(f"gemm_float: shapes {a.shape} and {b.shape} (trans_b={trans_b}) do not multiply",
                         "pass 2-D a (M, K) and b (K, N), or (N, K) with trans_b=True")
    n = b.shape[0] if trans_b else b.shape[1]
    c0 = None if c is None else np.ascontiguousarray(np.broadcast_to(np.asarray(c, _F32), (a.shape[0], n)))
    return _sgemm(a, b, c0, trans_b=trans_b)
