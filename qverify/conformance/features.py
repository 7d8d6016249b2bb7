"""Case features: a flat description of one op-level example that deviation entries can condition on
(``when = {kernel = [1, 1], stride_max = ">1"}`` in ``qverify/deviations/<backend>.toml``).

Features are computed from the OpCase alone (op, inputs, attributes), the same way for every
backend. A feature an op does not have is absent, and a condition on an absent feature is false.
Kept free of Hypothesis and of any runtime so that loading the deviation files stays cheap.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qverify.backends.base import OpCase
from qverify.errors import InputError

# name -> what it is; the only names a ``when`` table may use
FEATURES: dict[str, str] = {
    "op": "the OpCase op (QuantizeLinear, QLinearConv, qdq_conv, fake_quant, ...)",
    "elements": "number of elements of the first input",
    "x_dtype": "dtype of the first input (float32, uint8, int8)",
    "w_dtype": "weight dtype of integer kernels and QDQ subgraphs (uint8, int8)",
    "w_symmetric": "true when every weight zero point is 0 (integer kernels and QDQ subgraphs)",
    "y_dtype": "output code dtype of QuantizeLinear, QLinear* and QDQ subgraphs",
    "per_axis": "true when some scale is a vector (per-axis / per-channel parameters)",
    "min_scale": "smallest scale among the case's scales",
    "max_scale": "largest scale among the case's scales",
    "nonfinite": "true when the first input holds NaN or +-inf",
    "bias": "true when a conv / gemm has a bias",
    "post": "post ops of a QDQ conv subgraph, e.g. ['relu'] (empty list: none)",
    "kernel": "conv kernel size [kh, kw]",
    "kernel_h": "conv kernel height",
    "kernel_w": "conv kernel width",
    "stride_max": "largest conv stride",
    "pad_max": "largest conv padding",
    "dilation_max": "largest conv dilation",
    "group": "conv group count",
    "depthwise": "true when the conv is grouped with one input channel per group",
    "channel_multiplier": "output channels per group of a grouped conv (1 for a plain conv)",
    "in_h": "conv input height",
    "in_w": "conv input width",
    "out_h": "conv output height",
    "out_w": "conv output width",
    "levels": "FakeQuantize levels (fake_quantize_range; fake_quant: quant_max - quant_min + 1)",
    "output_range_empty": "true when a FakeQuantize's output range is a single value (ol == oh)",
}

# positions of the scale inputs, per op
_SCALES: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1,), "DequantizeLinear": (1,), "fake_quant": (1,),
    "QLinearMatMul": (1, 4, 6), "QLinearConv": (1, 4, 6),
    "qdq_conv": (1, 4, 6, 10), "qdq_matmul": (1, 4, 6), "qdq_gemm": (1, 4, 6),
}
_WEIGHT: dict[str, int] = {
    "MatMulInteger": 1, "ConvInteger": 1, "QLinearMatMul": 3, "QLinearConv": 3,
    "qdq_conv": 3, "qdq_matmul": 3, "qdq_gemm": 3,
}
_OUT_ZP: dict[str, int] = {"QuantizeLinear": 2, "QLinearMatMul": 7, "QLinearConv": 7,
                           "qdq_conv": 7, "qdq_matmul": 7, "qdq_gemm": 7}
_CONV = {"ConvInteger", "QLinearConv", "qdq_conv"}


def _input(case: OpCase, pos: int) -> np.ndarray | None:
    if pos < len(case.inputs) and case.inputs[pos] is not None:
        return np.asarray(case.inputs[pos])
    return None


def case_features(case: OpCase) -> dict[str, Any]:
    """The features of ``case`` (see :data:`FEATURES`); absent ones are left out."""
    f: dict[str, Any] = {"op": case.op}
    x = _input(case, 0)
    if x is not None:
        f["elements"] = int(x.size)
        f["x_dtype"] = x.dtype.name
        if x.dtype.kind == "f":
            f["nonfinite"] = bool(not np.all(np.isfinite(x)))
    if case.op in _WEIGHT and (w := _input(case, _WEIGHT[case.op])) is not None:
        f["w_dtype"] = w.dtype.name
        wz = _input(case, _WEIGHT[case.op] + 2)  # the weight zero point follows it (or its scale)
        f["w_symmetric"] = bool(wz is None or not np.any(wz))
    if case.op in _OUT_ZP and (z := _input(case, _OUT_ZP[case.op])) is not None:
        f["y_dtype"] = z.dtype.name
    scales = [s for p in _SCALES.get(case.op, ()) if (s := _input(case, p)) is not None]
    if scales:
        f["per_axis"] = any(s.ndim > 0 and s.size > 1 for s in scales)
        flat = np.concatenate([s.astype(np.float64).ravel() for s in scales])
        f["min_scale"] = float(flat.min())
        f["max_scale"] = float(flat.max())
    if case.op in ("QLinearConv", "qdq_conv", "qdq_gemm"):
        f["bias"] = _input(case, 8) is not None
    if case.op == "qdq_conv":
        f["post"] = list(case.attrs.get("post", ()))
    if case.op in _CONV and x is not None and (w := _input(case, _WEIGHT[case.op])) is not None and x.ndim == 4:
        a = case.attrs
        strides, pads, dil = list(a.get("strides", [1, 1])), list(a.get("pads", [0] * 4)), list(a.get("dilations", [1, 1]))
        group = int(a.get("group", 1))
        kh, kw = int(w.shape[2]), int(w.shape[3])
        from qverify.reference.kernels import conv_output_shape

        try:
            out_h, out_w = conv_output_shape(x.shape[2:], (kh, kw), strides, pads, dil)
        except InputError:  # kernel larger than the padded input: no output shape to describe
            out_h = out_w = None
        f.update(
            kernel=[kh, kw], kernel_h=kh, kernel_w=kw, stride_max=max(strides), pad_max=max(pads), dilation_max=max(dil), group=group,
            depthwise=group > 1 and int(w.shape[1]) == 1, channel_multiplier=int(w.shape[0]) // group,
            in_h=int(x.shape[2]), in_w=int(x.shape[3]),
        )
        if out_h is not None:
            f.update(out_h=out_h, out_w=out_w)
    if case.op == "fake_quantize_range":
        f["levels"] = int(case.attrs["levels"])
        ol, oh = _input(case, 3), _input(case, 4)
        if ol is not None and oh is not None:
            f["output_range_empty"] = bool(np.any(np.broadcast_arrays(ol, oh)[0] == np.broadcast_arrays(ol, oh)[1]))
    elif case.op == "fake_quant":
        f["levels"] = int(case.attrs["quant_max"]) - int(case.attrs["quant_min"]) + 1
    return f


# ---------------------------------------------------------------------------------------------
# conditions

_CMP = re.compile(r"^\s*(<=|>=|!=|==|<|>)\s*(\S.*?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def check_condition(name: str, expected: Any) -> str | None:
    """Why ``name = expected`` is not a valid condition (None when it is)."""
    if name not in FEATURES:
        return f"unknown case feature {name!r}"
    if isinstance(expected, str):
        m = _CMP.match(expected)
        if m and m.group(1) in ("<", "<=", ">", ">=") and _number(m.group(2)) is None:
            return f"{name} = {expected!r}: a comparison needs a number"
    elif not isinstance(expected, (bool, int, float, list)):
        return f"{name} = {expected!r}: give a value, a list or a comparison string like '>1'"
    return None


def _holds(value: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        m = _CMP.match(expected)
        if m:
            op, rhs = m.group(1), m.group(2)
            num = _number(rhs)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and num is not None:
                return _OPS[op](value, num)
            if op in ("==", "!="):
                return _OPS[op](str(value), rhs)
            return False
        return str(value) == expected
    if isinstance(expected, list):
        return isinstance(value, list) and value == expected
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return isinstance(value, (int, float)) and value == expected


def conditions_hold(when: Mapping[str, Any], features: Mapping[str, Any]) -> bool:
    """True when every condition of ``when`` holds for ``features`` (an absent feature: false).

    A condition is ``feature = value`` (equality; a list equals a list), or a string: ``"<= 1e-6"``,
    ``">1"``, ``"!= 0"`` (comparison with a number), or a plain string compared with the value."""
    return all(k in features and _holds(features[k], v) for k, v in when.items())
