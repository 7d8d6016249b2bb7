"""The OpenVINO CPU plugin segfaults on one conv corner (qverify/deviations/openvino.toml, the
``kind = "crash"`` entry), so conformance does not run such cases. This test keeps that entry
honest: it runs the minimal case and a neighbour in child processes. When it starts failing,
OpenVINO no longer crashes there: drop the entry."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

from qverify.backends.base import OpCase
from qverify.conformance import deviations, runner
from qverify.conformance.features import case_features

pytest.importorskip("openvino", reason="openvino not installed: pip install 'qverify[openvino]'")

_CHILD = r"""
import sys, numpy as np
from qverify.backends import registry
from qverify.backends.base import OpCase
F32 = np.float32
kh, pad = int(sys.argv[1]), int(sys.argv[2])
x = np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1)
w = np.ones((2, 2, kh, 1), np.int8)
case = OpCase("qdq_conv", [x, F32(0.5), np.uint8(3), w, F32(0.25), np.int8(0), F32(2.0), np.int8(1)],
              {"strides": [2, 2], "pads": [pad] * 4, "dilations": [2, 2], "group": 1})
b = registry.get("openvino")
print(b.run_op(case, b.variants()[0]).shape)
"""


def _case(kh: int, pad: int) -> OpCase:
    x = np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1)
    w = np.ones((2, 2, kh, 1), np.int8)
    f32 = np.float32
    return OpCase("qdq_conv", [x, f32(0.5), np.uint8(3), w, f32(0.25), np.int8(0), f32(2.0), np.int8(1)],
                  {"strides": [2, 2], "pads": [pad] * 4, "dilations": [2, 2], "group": 1})


def _run_child(kh: int, pad: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, str(kh), str(pad)],  # noqa: S603 - our interpreter
                          capture_output=True, text=True, timeout=300)


def test_declared_crash_still_crashes_and_its_neighbour_does_not():
    from qverify.backends import registry

    version = registry.get("openvino").availability().version
    entries = [d for d in deviations.load("openvino") if d.kind == "crash"]
    crash = runner.declared_crash(_case(2, 1), [d for d in entries if d.matches("openvino", "qdq_conv", "cpu", version)])
    assert crash is not None, "the minimal case is no longer covered by the crash entry"
    assert runner.declared_crash(_case(2, 0), entries) is None  # pad 0: outside the conditions
    died = _run_child(2, 1)
    assert died.returncode == -signal.SIGSEGV, (
        f"OpenVINO no longer crashes on the declared case (exit {died.returncode}): drop the crash "
        f"entry from qverify/deviations/openvino.toml. stdout: {died.stdout[-200:]}"
    )
    ok = _run_child(2, 0)
    assert ok.returncode == 0, ok.stderr[-500:]
    assert case_features(_case(2, 1))["kernel_h"] == 2
