"""Speed of Hypothesis property tests against OpenVINO, Hypothesis' own overhead included, as
examples per second and as a ratio against the same property test run on the pure reference in the
same run (``nox -s bench``).

Four property tests:

* ``fixed parameters``: Hypothesis draws the values and the shape's contents of a QuantizeLinear
  whose scale, zero point, dtype and shape are fixed, so every example after the first reuses the
  cached compiled model (the cache is per op, shape, dtype and parameters). Target (issue 3): at
  least 100 examples/s.
* ``drawn parameters``: the QuantizeLinear family as the conformance runner draws it (new scale and
  zero point every example). Parameters must be constants (the deployed form; the input form
  computes differently), so every example compiles a model (tens of ms here): the 100 examples/s target
  is not reachable this way, and the strict xfail below says so with the measured figure.
* ``drawn parameters, batched``: the same draws, but each Hypothesis example is a list of
  ``BATCH_SIZE`` cases run through ``OpenVinoBackend.run_ops`` (one compiled model per list, each
  case an independent branch; bit-identical to one model per case, proven in
  ``tests/backends/test_openvino_batch.py``) and then compared case by case through
  ``runner.evaluate`` (reference under the profile and the spec). Examples counted are cases.

* ``conformance row``: what ``qverify conformance`` runs — ``runner.run_row`` drawing one case
  per Hypothesis example and running the row's cases through ``run_ops`` — for QuantizeLinear,
  fake_quant (target 100 examples/s) and qdq_conv (reported). Measured 2026-11-23 with a
  conformance run beside it: 123, 109 and 49 examples/s (reference alone 379, 281, 144).

Timings are taken on a 2-core machine shared with other jobs: read them as orders of magnitude.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qverify.backends import registry
from qverify.backends.base import OpCase, Variant
from qverify.conformance import runner
from qverify.conformance.families import FAMILIES, float_values

pytestmark = pytest.mark.benchmark
pytest.importorskip("openvino", reason="openvino not installed: pip install 'qverify[openvino]'")

TARGET = 100.0  # examples per second against OpenVINO
F32 = np.float32


class _ReferenceBackend:
    """The baseline: a 'backend' that returns the reference itself (same evaluate() path)."""

    name = "reference"

    def run_op(self, case: OpCase, variant: Variant) -> np.ndarray:
        return FAMILIES["QuantizeLinear"].reference(case, variant.profile)

    def run_ops(self, cases, variant: Variant) -> list[np.ndarray]:
        return [self.run_op(c, variant) for c in cases]


class _Ran:
    """A 'backend' whose run_op returns what a batch already computed for the case (or raises
    what it raised), so that runner.evaluate compares it exactly as it compares run_op's output."""

    def __init__(self, name: str, result):
        self.name = name
        self.result = result

    def run_op(self, case: OpCase, variant: Variant) -> np.ndarray:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _fixed_parameter_cases():
    scale, zp = F32(0.037), np.uint8(131)

    @st.composite
    def cases(draw):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        mix = (draw(st.sampled_from([0.0, 0.5, 1.0])), 0.3, 0.1, 0.0)
        x = float_values(rng, (4, 16), scale, np.int64(zp), "uint8", mix)
        return OpCase("QuantizeLinear", [x, scale, zp])

    return cases()


def _examples_per_second(backend, variant, strategy, n: int) -> float:
    family = FAMILIES["QuantizeLinear"]
    count = [0]

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(case):
        out = runner.evaluate(backend, variant, family, case)
        if out is not None:
            count[0] += 1

    t0 = time.perf_counter()
    prop()
    return count[0] / (time.perf_counter() - t0)


def _batched_examples_per_second(backend, variant, strategy, lists: int, size: int, stats: dict) -> float:
    """Examples (cases) per second of a property test whose examples are lists of ``size`` cases,
    run with ``backend.run_ops`` and each compared with ``runner.evaluate``."""
    family = FAMILIES["QuantizeLinear"]
    count = [0]

    @settings(
        max_examples=lists,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=size, max_size=size))
    def prop(cases):
        for case, result in zip(cases, backend.run_ops(cases, variant)):
            out = runner.evaluate(_Ran(backend.name, result), variant, family, case)
            if out is not None:
                count[0] += 1
                stats["exact"] = stats.get("exact", 0) + int(out.exact_vs_profile)
            stats.setdefault("parameter_sets", set()).add(
                (np.asarray(case.inputs[1]).tobytes(), np.asarray(case.inputs[2]).tobytes())
            )

    t0 = time.perf_counter()
    prop()
    stats["examples"] = count[0]
    return count[0] / (time.perf_counter() - t0)


@pytest.fixture(scope="module")
def openvino():
    b = registry.get("openvino")
    if not b.availability().available:
        pytest.skip(b.availability().reason)
    return b


def test_fixed_parameters_property_test_speed(benchmark, openvino):
    variant = openvino.variants()[0]
    strategy = _fixed_parameter_cases()
    rates: dict[str, float] = {}

    def measure():
        rates["reference"] = _examples_per_second(_ReferenceBackend(), variant, strategy, 300)
        rates["openvino"] = _examples_per_second(openvino, variant, strategy, 300)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = rates["reference"] / rates["openvino"]
    benchmark.extra_info.update(
        {
            **{f"{k}_examples_per_s": round(v, 1) for k, v in rates.items()},
            "reference_over_openvino": round(ratio, 2),
        }
    )
    print(
        f"\nfixed parameters: openvino {rates['openvino']:.0f} examples/s, reference "
        f"{rates['reference']:.0f} examples/s (reference/openvino = {ratio:.2f})"
    )
    assert rates["openvino"] >= TARGET


@pytest.mark.xfail(
    strict=True,
    reason="a compiled model per parameter set (tens of ms per compile on this "
    "machine): drawn parameters run far below 100 examples/s",
)
def test_drawn_parameters_property_test_speed(benchmark, openvino):
    variant = openvino.variants()[0]
    strategy = FAMILIES["QuantizeLinear"].cases(runner.constraints_for(openvino, "QuantizeLinear", variant))
    rates: dict[str, float] = {}

    def measure():
        rates["reference"] = _examples_per_second(_ReferenceBackend(), variant, strategy, 200)
        rates["openvino"] = _examples_per_second(openvino, variant, strategy, 40)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = rates["reference"] / rates["openvino"]
    benchmark.extra_info.update(
        {
            **{f"{k}_examples_per_s": round(v, 1) for k, v in rates.items()},
            "reference_over_openvino": round(ratio, 2),
        }
    )
    print(
        f"\ndrawn parameters: openvino {rates['openvino']:.1f} examples/s, reference "
        f"{rates['reference']:.0f} examples/s (reference/openvino = {ratio:.1f})"
    )
    assert rates["openvino"] >= TARGET


def test_drawn_parameters_batched_property_test_speed(benchmark, openvino):
    """Drawn parameters (a new scale and zero point per case) at >= 100 examples/s: the cases of a
    Hypothesis example are compiled together by run_ops (see the module docstring)."""
    from qverify.backends.openvino_backend import BATCH_SIZE, OpenVinoBackend

    variant = openvino.variants()[0]
    strategy = FAMILIES["QuantizeLinear"].cases(runner.constraints_for(openvino, "QuantizeLinear", variant))
    fresh = OpenVinoBackend()  # nothing cached from the other tests: every case is compiled
    # warm-up outside the timing (plugin load, first compile, imports), for both sides alike
    warm = [OpCase("QuantizeLinear", [np.zeros(2, F32), F32(s), np.uint8(0)]) for s in (0.5, 0.25)]
    _ReferenceBackend().run_ops(warm, variant)
    fresh.run_ops(warm, variant)
    warmed = dict(fresh.batch_counts)
    rates: dict[str, float] = {}
    stats: dict[str, dict] = {"reference": {}, "openvino": {}}

    def measure():
        rates["reference"] = _batched_examples_per_second(
            _ReferenceBackend(), variant, strategy, 6, BATCH_SIZE, stats["reference"]
        )
        rates["openvino"] = _batched_examples_per_second(fresh, variant, strategy, 6, BATCH_SIZE, stats["openvino"])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ov_stats = stats["openvino"]
    ratio = rates["reference"] / rates["openvino"]
    benchmark.extra_info.update(
        {
            **{f"{k}_examples_per_s": round(v, 1) for k, v in rates.items()},
            "reference_over_openvino": round(ratio, 2),
            "examples": ov_stats["examples"],
            "distinct_parameter_sets": len(ov_stats["parameter_sets"]),
            "exact_vs_profile": ov_stats.get("exact", 0),
            "batch_counts": {k: v - warmed[k] for k, v in fresh.batch_counts.items()},
        }
    )
    print(
        f"\ndrawn parameters, batched by {BATCH_SIZE}: openvino {rates['openvino']:.0f} examples/s, reference "
        f"{rates['reference']:.0f} examples/s (reference/openvino = {ratio:.2f}); "
        f"{ov_stats['examples']} examples, {len(ov_stats['parameter_sets'])} distinct parameter sets, "
        f"{ov_stats.get('exact', 0)} exact vs the profile; run_ops: {benchmark.extra_info['batch_counts']}"
    )
    # the figure is only worth something if the cases really were compiled in batches
    assert fresh.batch_counts["batched"] - warmed["batched"] >= 0.9 * ov_stats["examples"]
    assert rates["openvino"] >= TARGET


@pytest.mark.parametrize("family_name", ["QuantizeLinear", "fake_quant", "qdq_conv"])
def test_conformance_row_rate(benchmark, openvino, family_name):
    """What `qverify conformance` runs: one row (runner.run_row) whose Hypothesis examples are each
    one case with drawn parameters, collected and then run through run_ops. examples/s over the
    whole row (drawing, reference, runtime, comparison), against the same row on the pure
    reference in the same run. Target (QuantizeLinear, fake_quant): >= 100 examples/s; qdq_conv
    (a reference QDQ graph per case) is reported."""
    from qverify.backends.openvino_backend import OpenVinoBackend
    from tests.conformance import _fakes

    fresh = OpenVinoBackend()  # nothing cached: every case is compiled
    variant = fresh.variants()[0]
    family = FAMILIES[family_name]
    ref = _fakes.ReferenceBackend()
    ref.ops = (family.op,)
    rows = {}

    def measure():
        rows["reference"] = runner.run_row(ref, Variant("plain", variant.profile), family, examples=300, seed=0)
        rows["openvino"] = runner.run_row(fresh, variant, family, examples=300, seed=0, ledger=ledger)

    from qverify.conformance.deviations import Ledger

    ledger = Ledger.for_backends(["openvino"])
    benchmark.pedantic(measure, rounds=1, iterations=1)
    rates = {k: r.examples / r.seconds for k, r in rows.items() if r.seconds}
    benchmark.extra_info.update({f"{k}_examples_per_s": round(v, 1) for k, v in rates.items()})
    print(f"\n{family_name} row: " + ", ".join(f"{k} {v:.0f} examples/s" for k, v in rates.items())
          + f"; run_ops {fresh.batch_counts}")
    assert rows["openvino"].status == "ok", rows["openvino"].reason
    assert fresh.batch_counts["batched"] >= 0.9 * rows["openvino"].examples
    if family_name != "qdq_conv":
        assert rates["openvino"] >= TARGET
