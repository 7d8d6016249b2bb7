"""OpenVINO CPU-plugin faults behind the conditioned entries of qverify/deviations/openvino.toml
(openvino 2026.4, INFERENCE_PRECISION_HINT=f32).

Each fault is pinned on a minimal case that runs the real runtime, next to a neighbouring geometry
outside the entry's ``when`` conditions that is exact. When a pin fails, OpenVINO has changed:
the message says which entry to narrow or remove. The entries' conditions are checked against the
same cases, so the TOML and these tests cannot drift apart.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given

from qverify.backends import registry
from qverify.backends.base import OpCase
from qverify.conformance.deviations import load
from qverify.conformance.families import FAMILIES, Constraints, fake_quantize_range_cases
from qverify.conformance.features import case_features
from qverify.reference import cpu
from qverify.reference.kernels import qlinear_conv

pytest.importorskip("openvino", reason="openvino not installed: pip install 'qverify[openvino]'")

F32 = np.float32
FIXED = (
    "OpenVINO no longer shows this fault: narrow or remove the entry {} in qverify/deviations/openvino.toml"
)


@pytest.fixture(scope="module")
def backend():
    b = registry.get("openvino")
    if not b.availability().available:
        pytest.skip(b.availability().reason)
    return b


@pytest.fixture(scope="module")
def cpu_variant(backend):
    return backend.variants()[0]


def _conv_case(
    x: np.ndarray,
    w: np.ndarray,
    *,
    group: int = 1,
    stride: int = 1,
    pad: int = 0,
    post: tuple[str, ...] = (),
    per_channel: bool = True,
    extra: list | None = None,
) -> OpCase:
    """A qdq_conv case in the layout of families.qlinear_conv_cases: x, sx, zx, w, sw, zw, sy, zy[, bias][, r, rs, rz]."""
    cout = w.shape[0]
    sw = np.linspace(0.004, 0.02, cout).astype(F32) if per_channel else F32(0.01)
    zw = np.zeros(cout, np.int8) if per_channel else np.int8(0)
    zx = np.uint8(128) if x.dtype == np.uint8 else np.int8(0)
    sy = F32(0.05 * 0.01 * 128 * np.sqrt(np.prod(w.shape[1:])))
    inputs: list = [x, F32(0.05), zx, w, sw, zw, sy, np.int8(0)] + (extra or [])
    attrs = {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [1, 1], "group": group}
    if post:
        attrs["post"] = post
    return OpCase("qdq_conv", inputs, attrs)


def _reference(case: OpCase) -> np.ndarray:
    return FAMILIES["qdq_conv"].reference(case, "openvino")


def _kernel_reference(
    case: OpCase, x: np.ndarray | None = None, *, stride=None, isa: str | None = None
) -> np.ndarray:
    """qlinear_conv under the openvino profile (same arithmetic as the QDQ conv without post ops),
    optionally on another input / stride and with the accumulation of another ISA."""
    i, a = case.inputs, case.attrs
    s = a["strides"] if stride is None else stride
    return qlinear_conv(
        i[0] if x is None else x,
        *i[1:8],
        strides=s,
        pads=a["pads"],
        dilations=a["dilations"],
        group=a["group"],
        profile="openvino",
        isa=isa,
    )


def _entries(kind: str, case: OpCase, family: str):
    feats = case_features(case)
    return [
        d
        for d in load("openvino")
        if d.kind == kind and d.when and d.applies(feats) and d.matches("openvino", family, "cpu", "2026.4.1")
    ]


def _conv_primitive(backend, case: OpCase, variant) -> str:
    """The oneDNN implementation the CPU plugin picked for the conv (runtime model primitiveType)."""
    compiled = backend.compiled_for(case, variant)[1]
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if str(rt["layerType"].astype(str)) == "Convolution":
            return str(rt["primitiveType"].astype(str))
    raise AssertionError("the runtime model has no Convolution")


def _codes(rng, shape, dtype=np.uint8):
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


# -- fault 1: a 1x1 conv with stride 2 and pad 1 (StridesOptimization) ---------------------------


def test_strided_padded_1x1_conv_subsamples_before_padding(backend, cpu_variant):
    """Kernel 1x1, stride 2, pad 1, group 1: the runtime subsamples x by 2 (an inserted MaxPool)
    and then runs the conv with stride 1 and the original pads: its output is exactly the
    reference conv of x[..., ::2, ::2] with stride 1, shape (1,2,5,4) instead of (1,2,4,3)."""
    rng = np.random.default_rng(3)
    x, w = _codes(rng, (1, 3, 5, 3)), _codes(rng, (2, 3, 1, 1), np.int8)
    case = _conv_case(x, w, stride=2, pad=1)
    got, want = backend.run_op(case, cpu_variant), _reference(case)
    assert want.shape == (1, 2, 4, 3)
    assert got.shape == (1, 2, 5, 4), FIXED.format("openvino/qdq_conv*/cpu (kind shape)")
    np.testing.assert_array_equal(got, _kernel_reference(case, x[:, :, ::2, ::2], stride=[1, 1]))
    layers = backend.execution_info(case, cpu_variant)["layers"]
    assert any(k.startswith("Pooling:") for k in layers), layers  # the inserted subsampling
    assert _entries("shape", case, "qdq_conv"), "the shape entry's conditions must cover this case"


@pytest.mark.parametrize(
    "what, group, stride, pad",
    [("pad 0", 1, 2, 0), ("stride 1", 1, 1, 1), ("depthwise (GroupConvolution)", 3, 2, 1)],
)
def test_neighbours_of_the_strided_padded_1x1_conv_are_exact(backend, cpu_variant, what, group, stride, pad):
    rng = np.random.default_rng(4)
    x, w = _codes(rng, (1, 3, 5, 3)), _codes(rng, (3 if group > 1 else 2, 3 // group, 1, 1), np.int8)
    case = _conv_case(x, w, group=group, stride=stride, pad=pad)
    np.testing.assert_array_equal(backend.run_op(case, cpu_variant), _reference(case), err_msg=what)
    assert not _entries("shape", case, "qdq_conv"), f"{what}: outside the shape entry's conditions"


def test_strided_padded_1x1_conv_then_pool_gives_wrong_values_of_the_right_shape(backend, cpu_variant):
    rng = np.random.default_rng(5)
    x, w = _codes(rng, (1, 2, 5, 5)), _codes(rng, (2, 2, 1, 1), np.int8)
    case = _conv_case(x, w, stride=2, pad=1, post=("maxpool",))
    got, want = backend.run_op(case, cpu_variant), _reference(case)
    assert got.shape == want.shape == (1, 2, 2, 2)
    assert np.any(got != want), FIXED.format("openvino/qdq_conv_*pool/cpu")
    assert _entries("values", case, "qdq_conv_maxpool")


def test_strided_padded_1x1_conv_then_add_fails_to_compile(backend, cpu_variant):
    rng = np.random.default_rng(6)
    x, w = _codes(rng, (1, 2, 5, 5)), _codes(rng, (2, 2, 1, 1), np.int8)
    r = _codes(rng, (1, 2, 4, 4), np.int8)  # the conv's output shape
    case = _conv_case(x, w, stride=2, pad=1, post=("add",), extra=[None, r, F32(0.3), np.int8(3)])
    assert _reference(case).shape == (1, 2, 4, 4)
    (entry,) = _entries("error", case, "qdq_conv_add")
    with pytest.raises(Exception) as err:  # noqa: PT011 - the runtime's own exception type
        backend.run_op(case, cpu_variant)
    msg = " ".join(str(err.value).split())
    assert re.search(entry.match, msg), msg
    same = _conv_case(
        x,
        w,
        stride=1,
        pad=1,
        post=("add",),
        extra=[None, _codes(rng, (1, 2, 7, 7), np.int8), F32(0.3), np.int8(3)],
    )
    np.testing.assert_array_equal(backend.run_op(same, cpu_variant), _reference(same))


# -- fault 2: grouped conv, one input channel per group, multiplier 2, run as oneDNN gemm ---------


def _saturating_depthwise(multiplier: int) -> OpCase:
    """Depthwise 3x1 kernel, pad 1, 5x5 input (a conformance failure): activations 255 (code) and
    weights +127 so that every pair of products overflows int16 (2*255*127 = 64770 > 32767)."""
    x = np.full((1, 2, 5, 5), 255, np.uint8)
    w = np.full((2 * multiplier, 1, 3, 1), 127, np.int8)
    w[:, :, 2] = -128  # unpaired third tap keeps the sums inside the output range
    return _conv_case(x, w, group=2, pad=1)


@pytest.fixture(scope="module")
def vnni():
    if cpu.detect_isa() != "vnni":
        pytest.skip(
            "the fault is the gemm kernel ignoring VNNI; this CPU has none, and the profile pairs already"
        )


def test_depthwise_multiplier_2_runs_as_gemm_and_saturates_pairs(backend, cpu_variant, vnni):
    case = _saturating_depthwise(2)
    prim = _conv_primitive(backend, case, cpu_variant)
    got = backend.run_op(case, cpu_variant)
    exact, paired = _kernel_reference(case, isa="vnni"), _kernel_reference(case, isa="avx2")
    assert np.abs(paired.astype(int) - exact.astype(int)).max() > 1  # the case can tell them apart
    assert prim.startswith("jit_gemm") and np.array_equal(got, paired), FIXED.format(
        f"openvino/qdq_conv*/cpu (depthwise, channel_multiplier 2; now {prim})"
    )
    assert _entries("values", case, "qdq_conv")


def test_depthwise_multiplier_1_is_exact_on_the_same_data(backend, cpu_variant, vnni):
    case = _saturating_depthwise(1)
    assert _conv_primitive(backend, case, cpu_variant).startswith("brgconv")
    exact = _kernel_reference(case, isa="vnni")
    assert np.any(exact != _kernel_reference(case, isa="avx2"))
    np.testing.assert_array_equal(backend.run_op(case, cpu_variant), exact)
    assert not _entries("values", case, "qdq_conv")


# -- fault 3: FakeQuantize with ol == oh (tests/backends/test_openvino.py) -----------------------


@given(fake_quantize_range_cases(Constraints()))
def test_the_fake_quantize_range_family_never_draws_an_empty_output_range(case):
    """ol == oh gives garbage on the CPU plugin, but the family draws ol <= 0 < 0.1 <= oh or
    (ol, oh) = (il, ih) with ih - il >= 1e-3: no deviation entry is needed for it."""
    assert case_features(case)["output_range_empty"] is False


# -- fault 4: a depthwise conv (multiplier 2) whose output columns all read padding kills the process


_CRASH_CHILD = """
import numpy as np, sys
from qverify.backends import registry
from qverify.backends.base import OpCase
x_dtype = np.dtype(sys.argv[1])
rng = np.random.default_rng(0)
lo, hi = np.iinfo(x_dtype).min, np.iinfo(x_dtype).max
x = rng.integers(lo, hi + 1, (1, 2, 5, 1)).astype(x_dtype)
w = rng.integers(-128, 128, (4, 1, 1, 1)).astype(np.int8)
f = np.float32
case = OpCase("qdq_conv", [x, f(1), x_dtype.type(5), w, np.full(4, 0.0625, f), np.zeros(4, np.int8), f(8), np.int8(0)],
              {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2], "group": 2})
b = registry.get("openvino")
print(b.run_op(case, b.variants()[0]).shape)
"""


def _depthwise_crash_case(x_dtype: str) -> OpCase:
    """The child's case, built here for its features (values do not matter for the conditions)."""
    x = np.zeros((1, 2, 5, 1), x_dtype)
    w = np.zeros((4, 1, 1, 1), np.int8)
    zx = np.dtype(x_dtype).type(5)
    inputs = [x, F32(1), zx, w, np.full(4, 0.0625, F32), np.zeros(4, np.int8), F32(8), np.int8(0)]
    return OpCase("qdq_conv", inputs, {"strides": [2, 2], "pads": [1] * 4, "dilations": [2, 2], "group": 2})


def _run_in_child(x_dtype: str):
    import subprocess
    import sys

    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _CRASH_CHILD, x_dtype],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_depthwise_multiplier_2_conv_reading_only_padding_kills_the_process(backend):
    """Width-1 input (height 5), 1x1 kernel, stride 2, pad 1, dilation 2, two groups of one input
    channel and two output channels, u8 activations: every output column reads padding only and the
    CPU plugin dies with SIGSEGV, also with this 1x1 kernel (GroupConvolution is not rewritten by
    StridesOptimization), so the group-1 crash entry (kernel height >= 2) does not cover it. The same
    case with s8 activations runs."""
    import signal

    crashed = _run_in_child("uint8")
    assert crashed.returncode == -signal.SIGSEGV, (
        FIXED.format("openvino/qdq_conv*/cpu (kind crash, depthwise, channel_multiplier 2, kernel_h 1)")
        + f" (rc {crashed.returncode}: {crashed.stdout.strip()} {crashed.stderr.strip()[-300:]})"
    )
    feats = case_features(_depthwise_crash_case("uint8"))
    assert any(d.kind == "crash" and d.applies(feats) for d in load("openvino")), "no crash entry covers it"
    neighbour = _run_in_child("int8")
    assert neighbour.returncode == 0 and "(1, 4, 4, 2)" in neighbour.stdout, neighbour.stderr[-500:]
    feats = case_features(_depthwise_crash_case("int8"))
    assert not any(d.kind == "crash" and d.applies(feats) for d in load("openvino"))
