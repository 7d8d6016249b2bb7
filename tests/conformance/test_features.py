"""Case features and the deviation conditions built on them (``when``, ``kind``, ``match``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qverify.backends.base import OpCase, Variant
from qverify.conformance import deviations, runner
from qverify.conformance.families import FAMILIES
from qverify.conformance.features import FEATURES, case_features, conditions_hold
from qverify.errors import SuiteError

from . import _fakes

F32 = np.float32


def _conv_case(stride=2, pad=1, dil=2, h=2, w=1, group=1, cin=1, cout=1, k=1, post=None, bias=True):
    x = np.arange(cin * h * w, dtype=np.uint8).reshape(1, cin, h, w)
    wt = np.ones((cout, cin // group, k, k), np.int8)
    inputs = [x, F32(0.5), np.uint8(3), wt, np.full(cout, 0.25, F32), np.zeros(cout, np.int8), F32(2.0), np.uint8(7)]
    if bias:
        inputs.append(np.zeros(cout, np.int32))
    attrs = {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [dil, dil], "group": group}
    if post:
        attrs["post"] = post
    return OpCase("qdq_conv" if post else "QLinearConv", inputs, attrs)


def test_conv_features_describe_the_geometry():
    f = case_features(_conv_case(stride=2, pad=1, dil=2, h=2, w=1))
    assert f["kernel"] == [1, 1] and f["stride_max"] == 2 and f["pad_max"] == 1 and f["dilation_max"] == 2
    assert (f["in_h"], f["in_w"], f["out_h"], f["out_w"]) == (2, 1, 2, 2)
    assert f["per_axis"] is False  # one output channel: a length-1 vector is per tensor
    assert (f["x_dtype"], f["w_dtype"], f["y_dtype"]) == ("uint8", "int8", "uint8")
    assert (f["min_scale"], f["max_scale"], f["bias"]) == (0.25, 2.0, True)
    g = case_features(_conv_case(stride=1, pad=0, dil=1, h=3, w=3, group=2, cin=2, cout=6, k=3, post=("relu",)))
    assert g["depthwise"] and g["channel_multiplier"] == 3 and g["group"] == 2 and g["post"] == ["relu"]
    assert g["per_axis"] is True and (g["out_h"], g["out_w"]) == (1, 1)
    assert set(f) | set(g) <= set(FEATURES)


def test_quantize_and_range_features():
    q = OpCase("QuantizeLinear", [np.array([np.nan, 1], F32), F32(1e-7), np.int8(0)])
    f = case_features(q)
    assert f["nonfinite"] and f["min_scale"] == pytest.approx(1e-7) and f["y_dtype"] == "int8"
    r = OpCase("fake_quantize_range", [np.zeros(3, F32), F32(-1), F32(1), F32(0.5), F32(0.5)], {"levels": 256})
    assert case_features(r)["output_range_empty"] and case_features(r)["levels"] == 256


@pytest.mark.parametrize(
    "when, holds",
    [
        ({"kernel": [1, 1], "stride_max": ">1"}, True),
        ({"kernel": [1, 1], "stride_max": ">2"}, False),
        ({"stride_max": 2, "pad_max": "<= 1", "x_dtype": "uint8"}, True),
        ({"x_dtype": "!= uint8"}, False),
        ({"depthwise": True}, False),
        ({"levels": 256}, False),  # absent feature: the condition does not hold
        ({}, True),
    ],
)
def test_conditions(when, holds):
    assert conditions_hold(when, case_features(_conv_case())) is holds


def _ledger(tmp_path: Path, text: str) -> deviations.Ledger:
    (tmp_path / "fake_reference.toml").write_text(text)
    return deviations.Ledger.for_backends(["fake_reference"], directory=tmp_path)


class _Broken:
    """Raises for width-1 convs, returns one extra column for 1x1 kernels, else the reference."""

    name = "fake_reference"

    def run_op(self, case, variant):
        if case.inputs[0].shape[3] == 1:
            raise RuntimeError("worker exit code -11, SIGSEGV")
        want = FAMILIES["QLinearConv"].reference(case, variant.profile)
        return np.concatenate([want, want[..., :1]], axis=-1)


ENTRIES = """
[[deviation]]
id = "fake_reference/QLinearConv/*"
cause = "crashes on width-1 inputs"
kind = "error"
match = "SIGSEGV"
when = { in_w = 1 }

[[deviation]]
id = "fake_reference/QLinearConv/*"
cause = "one column too many for strided 1x1 kernels"
kind = "shape"
when = { kernel = [1, 1], stride_max = ">1" }
"""


def test_error_and_shape_deviations_explain_only_the_cases_they_name(tmp_path):
    ledger = _ledger(tmp_path, ENTRIES)
    crash, shape = ledger.entries
    variant, fam, b = Variant("plain", "onnxruntime"), FAMILIES["QLinearConv"], _Broken()
    out = runner.evaluate(b, variant, fam, _conv_case(w=1), deviations=ledger.entries)
    assert out.error and out.explained_by is crash and not out.unexplained
    out = runner.evaluate(b, variant, fam, _conv_case(w=3), deviations=ledger.entries)
    assert out.explained_by is shape and not out.unexplained
    # a stride-1 case with the same wrong shape is not covered by the shape entry: unexplained
    out = runner.evaluate(b, variant, fam, _conv_case(w=3, stride=1), deviations=ledger.entries)
    assert out.unexplained and out.explained_by is None
    # an error whose message does not match is not explained either
    out = runner.error_outcome(_conv_case(w=1), RuntimeError("out of memory"), None, ledger.entries)
    assert out.unexplained


@pytest.mark.parametrize(
    "extra, message",
    [
        ('when = { kernal = [1, 1] }', "unknown case feature 'kernal'"),
        ('when = { stride_max = ">x" }', "a comparison needs a number"),
        ('when = "kernel 1x1"', "when must be a table"),
        ('kind = "segfault"', "kind='segfault' is not one of"),
        ('kind = "shape"', "needs case conditions"),
        ('kind = "error"\nwhen = { in_w = 1 }', "needs match"),
        ('kind = "error"\nmatch = "(["\nwhen = { in_w = 1 }', "is not a regex"),
        ('match = "x"', "match is only for kind = 'error'"),
    ],
)
def test_bad_conditions_give_one_line_errors(tmp_path, extra, message):
    text = '[[deviation]]\nid = "fake_reference/QLinearConv/*"\ncause = "c"\n' + extra + "\n"
    with pytest.raises(SuiteError) as err:
        _ledger(tmp_path, text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_entries_sharing_an_id_are_told_apart_by_their_conditions(tmp_path):
    ledger = _ledger(tmp_path, ENTRIES)  # both entries have the id fake_reference/QLinearConv/*
    crash, shape = ledger.entries
    assert crash.id == shape.id and crash.key != shape.key and "in_w=1" in crash.key
    ledger.mark(crash)
    assert ledger.stale() == [shape]
    first = ENTRIES[: ENTRIES.index("[[deviation]]", 10)]
    with pytest.raises(SuiteError, match="two deviations are both"):
        _ledger(tmp_path, first + first)


def test_a_one_step_float_difference_is_within_a_one_lsb_tolerance(tmp_path):
    """(a - b) / s of two float32 outputs one step apart is 1 only up to rounding."""
    ledger = _ledger(tmp_path, '[[deviation]]\nid = "fake_reference/DequantizeLinear/*"\ncause = "c"\ntolerance_lsb = 1\n')
    s = F32(3.6797850)
    case = OpCase("DequantizeLinear", [np.array([-57, 3], np.int8), s, np.int8(0)])
    want = FAMILIES["DequantizeLinear"].reference(case, "onnxruntime")
    got = want.copy()
    got[0] = F32(F32(-58) * s)  # one step away; (got - want) / s is not exactly 1 in float64
    assert runner.lsb_distance(got, want, s) != 1.0
    out = runner.compare(FAMILIES["DequantizeLinear"], case, Variant("plain", "onnxruntime"), got, want,
                         deviations=ledger.entries)
    assert out.explained_by is not None
    got[0] = F32(F32(-59) * s)  # two steps: not within 1 LSB
    out = runner.compare(FAMILIES["DequantizeLinear"], case, Variant("plain", "onnxruntime"), got, want,
                         deviations=ledger.entries)
    assert out.unexplained


class _MustNotRun(_fakes.ReferenceBackend):
    ops = ("QLinearConv",)

    def __init__(self):
        self.ran = 0

    def run_op(self, case, variant):
        self.ran += 1
        return FAMILIES["QLinearConv"].reference(case, variant.profile)

    def run_ops(self, cases, variant):
        return [self.run_op(c, variant) for c in cases]


def test_declared_crashes_are_not_run_and_count_as_explained(tmp_path):
    ledger = _ledger(tmp_path, '[[deviation]]\nid = "fake_reference/QLinearConv/*"\ncause = "segfaults"\n'
                               'kind = "crash"\nwhen = { in_w = 1 }\n')
    (crash,) = ledger.entries
    b, variant, fam = _MustNotRun(), Variant("plain", "onnxruntime"), FAMILIES["QLinearConv"]
    out = runner.evaluate(b, variant, fam, _conv_case(w=1), deviations=ledger.entries)
    assert b.ran == 0 and out.explained_by is crash and not out.unexplained and "not run" in out.error
    out = runner.evaluate(b, variant, fam, _conv_case(w=3), deviations=ledger.entries)
    assert b.ran == 1 and out.exact_vs_profile
    # the batched path filters them before run_ops, too
    row = runner.run_row(b, variant, fam, examples=120, seed=4, ledger=ledger)
    crashed = row.explained.get(crash.key, 0)
    assert row.status == "ok" and crashed > 0 and b.ran - 1 == row.examples - crashed
