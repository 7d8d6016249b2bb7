"""The runner's batched path (a backend with ``run_ops`` runs all drawn cases after Hypothesis has
drawn them) and its execution counts: same verdicts as the one-by-one path."""

from __future__ import annotations

import numpy as np

from qverify.backends.base import Variant
from qverify.conformance import families, runner

from . import _fakes

VARIANT = Variant("plain", "onnxruntime")


class _Batched(_fakes.OffByOneBackend):
    """The planted off-by-one, but run in batches; every fifth case raises in its slot."""

    name = "fake_batched"

    def __init__(self):
        self.calls: list[int] = []

    def run_ops(self, cases, variant):
        self.calls.append(len(cases))
        out = []
        for i, c in enumerate(cases):
            out.append(RuntimeError("planted failure") if i % 5 == 4 else self.run_op(c, variant))
        return out


class _Reporting(_fakes.ReferenceBackend):
    """Faithful, and says it ran on int8 for odd-sized inputs and float otherwise."""

    ops = ("QuantizeLinear", "QLinearMatMul")

    def run_op(self, case, variant):
        with np.errstate(all="ignore"):
            return families.get(case.op).reference(case, variant.profile)

    def execution_info(self, case, variant):
        return {"precision": "int8" if np.size(case.inputs[0]) % 2 else "float"}


def test_batched_backend_runs_every_drawn_case_in_one_call_and_counts_slot_errors():
    b = _Batched()
    row = runner.run_row(b, VARIANT, families.get("QuantizeLinear"), examples=50, seed=2)
    assert len(b.calls) == 1 and b.calls[0] == row.examples > 0
    assert row.status == "failed" and row.unexplained >= row.examples // 5  # the slot errors at least
    # the one-by-one path on the same draws (no run_ops) flags the off-by-one too
    one = runner.run_row(_fakes.OffByOneBackend(), VARIANT, families.get("QuantizeLinear"), examples=50, seed=2)
    assert one.examples == row.examples and 0 < one.unexplained <= row.unexplained


def test_execution_counts_are_recorded_for_compute_ops_only():
    b = _Reporting()
    row = runner.run_row(b, VARIANT, families.get("QLinearMatMul"), examples=40, seed=0)
    assert row.status == "ok" and sum(row.execution.values()) == row.examples
    assert set(row.execution) <= {"int8", "float"} and row.execution
    q = runner.run_row(b, VARIANT, families.get("QuantizeLinear"), examples=20, seed=0)
    assert q.execution == {} and q.to_dict()["execution"] == {}
