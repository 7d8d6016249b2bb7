"""``OpenVinoBackend.run_ops``: many cases compiled into one model, one independent branch each.

Issue 3 allows a faster form only where a test proves it computes exactly what the deployed form
(one model per case, constant parameters, static shapes) computes. Here, for every op family of
``BATCHED_OPS``, Hypothesis draws lists of cases as the conformance runner draws them (with the
backend's constraints); each list runs batched on a fresh backend (so nothing comes from the
single-case cache) and case by case through ``run_op``, and every output must be bit-identical
(NaN equals NaN) with the same dtype and shape. Then: a case that cannot build or compile costs
only itself (its own exception in its slot, the others still right), and the slots keep their
order when ops of different kinds are mixed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qverify.backends import onnx_graphs
from qverify.backends.base import OpCase
from qverify.backends.openvino_backend import BATCHED_OPS, OpenVinoBackend
from qverify.conformance import deviations, runner
from qverify.conformance.families import FAMILIES
from qverify.errors import InputError

F32 = np.float32

# Cases per drawn list; the single-case side compiles one model per case (~20-50 ms here), which
# is what bounds this file's time. QDQ subgraphs compile slowest: fewer of them.
_DRAWS = {"QuantizeLinear": 20, "DequantizeLinear": 20, "fake_quant": 20, "fake_quantize_range": 20}
_QDQ_DRAWS = 10
_EXAMPLES = 4  # lists per family (Hypothesis' first list is its simplest: mostly one repeated case)

_SETTINGS = settings(
    max_examples=_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.fixture(scope="module")
def single():
    """The backend as every caller gets it: one compiled model per case."""
    pytest.importorskip("openvino", reason="openvino not installed: pip install 'qverify[openvino]'")
    b = OpenVinoBackend()
    if not b.availability().available:
        pytest.skip(b.availability().reason)
    return b


@pytest.fixture(scope="module")
def cpu(single):
    return single.variants()[0]


def _batched_families() -> list:
    return [f for f in FAMILIES.values() if f.op in BATCHED_OPS]


def _run_alone(backend: OpenVinoBackend, case: OpCase, variant) -> np.ndarray | Exception:
    try:
        return backend.run_op(case, variant)
    except Exception as err:  # noqa: BLE001 - compared with the batched slot
        return err


def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else ""


def _assert_same(got, want, where: str) -> None:
    if isinstance(want, Exception):
        assert isinstance(got, Exception), f"{where}: alone it raises {want!r}, batched it gave an output"
        # the same error; runtime messages name generated node ids, so compare their last line
        assert (type(got), _last_line(got)) == (type(want), _last_line(want)), where
        return
    assert not isinstance(got, Exception), f"{where}: batched it raised {got!r}, alone it runs"
    assert (got.dtype, got.shape) == (want.dtype, want.shape), where
    if got.dtype.kind == "f":
        finite = ~np.isnan(want)
        same = np.array_equal(got, want, equal_nan=True) and np.array_equal(
            np.signbit(got[finite]), np.signbit(want[finite])  # -0.0 is not 0.0 here
        )
    else:
        same = np.array_equal(got, want)
    if not same:
        bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))) if got.dtype.kind == "f" else got != want)
        raise AssertionError(
            f"{where}: batched differs from alone at flat indices {bad[:5]} of {got.size} (none listed: a zero's sign)"
        )


def test_batched_ops_are_the_ops_openvino_runs(single, cpu):
    """Every op run_ops batches is one the backend runs; nothing else is batched."""
    assert BATCHED_OPS
    assert all(single.supports(op, cpu) for op in BATCHED_OPS)


@pytest.mark.parametrize("family", _batched_families(), ids=lambda f: f.name)
def test_batched_outputs_are_bit_identical_to_one_model_per_case(family, single, cpu):
    n = _DRAWS.get(family.name, _QDQ_DRAWS)
    batched = OpenVinoBackend()
    strategy = family.cases(runner.constraints_for(single, family.op, cpu))

    @_SETTINGS
    @given(st.lists(strategy, min_size=n, max_size=n))
    def prop(cases):
        # cases that kill the process (declared crash deviations) cannot be run in-process at all
        cases = [c for c in cases if runner.declared_crash(c, _CRASHES) is None]
        n = len(cases)
        before = dict(batched.batch_counts)
        got = batched.run_ops(cases, cpu)
        ran = {k: batched.batch_counts[k] - before[k] for k in before}
        assert len(got) == n
        alone = [_run_alone(single, case, cpu) for case in cases]
        for i, (case, g, want) in enumerate(zip(cases, got, alone)):
            _assert_same(g, want, f"{family.name} case {i} ({case.attrs})")
            if family.compute and not isinstance(want, Exception):
                # what ran (int8 or float fallback), read from the case's branch of the batch
                # model, is what the case's own model runs
                assert _ran(batched.execution_info(case, cpu)) == _ran(single.execution_info(case, cpu)), i
        # Every case went into a batch, except cases that fail alone too (e.g. a strided 1x1 conv
        # with padding gets a wrong output shape, which an 'add' post op refuses) and at most one
        # good neighbour each, left alone by the halving; nothing came from a cache.
        failing = sum(isinstance(w, Exception) for w in alone)
        assert ran["batched"] + ran["single"] == n, ran
        assert ran["single"] <= 2 * failing, (ran, failing, batched.last_batch_error)
        assert ran["batched"] >= n - 2 * failing

    prop()


_CRASHES = [d for d in deviations.load("openvino") if d.kind == "crash"]


def _ran(info: dict) -> tuple:
    return info["precision"], sorted((c["type"], c["precision"]) for c in info["compute_layers"])


def _quantize_cases(n: int, seed: int = 0) -> list[OpCase]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = (2, 3 + i % 3)
        x = (rng.normal(0, 2, shape) * rng.choice([1, 1e3], shape)).astype(F32)
        out.append(OpCase("QuantizeLinear", [x, F32(rng.uniform(0.01, 0.2)), np.uint8(rng.integers(0, 256))]))
    return out


def _qdq_conv(wdtype=np.int8, seed=0) -> OpCase:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(0, 128, (5, 4, 3, 3)).astype(wdtype)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    return OpCase(
        "qdq_conv",
        [x, F32(0.05), np.uint8(3), w, F32(0.01 + seed * 1e-3), np.asarray(0, wdtype), F32(0.2), np.uint8(5)],
        attrs,
    )


@pytest.mark.parametrize("bad_at", [0, 5, 7])
def test_a_case_the_onnx_frontend_refuses_costs_only_itself(single, cpu, bad_at):
    """A per-axis QuantizeLinear on axis 0 builds as ONNX but OpenVINO's ONNX frontend refuses it
    (``test_onnx_per_axis_qdq_loads_on_the_last_axis_only``): the merged model fails to read, the
    batch splits, and only that slot holds the error run_op raises."""
    cases = _quantize_cases(8)
    s = np.array([0.05, 0.1, 0.2], F32)
    cases[bad_at] = OpCase("QuantizeLinear", [np.ones((3, 4), F32), s, np.zeros(3, np.int8)], {"axis": 0})
    batched = OpenVinoBackend()
    got = batched.run_ops(cases, cpu)
    assert isinstance(got[bad_at], RuntimeError) and "Argument shapes are inconsistent" in str(got[bad_at])
    for i, (case, g) in enumerate(zip(cases, got)):
        _assert_same(g, _run_alone(single, case, cpu), f"case {i}")
    counts = batched.batch_counts
    assert counts["failed_batches"] >= 1 and "Argument shapes are inconsistent" in batched.last_batch_error
    # halving: the bad case ends alone, with at most one good neighbour; the rest stay batched
    assert counts["batched"] >= len(cases) - 2 and counts["batched"] + counts["single"] == len(cases)


def test_a_qdq_conv_that_does_not_compile_costs_only_itself(single, cpu):
    """uint8 weights make the CPU plugin's compile fail ("No suitable implementations",
    ``test_qdq_conv_with_uint8_weights_does_not_compile``): that slot holds the error, the other
    convolutions come out of a batch as they do alone."""
    cases = [_qdq_conv(seed=k) for k in range(5)]
    cases[2] = _qdq_conv(wdtype=np.uint8)
    batched = OpenVinoBackend()
    got = batched.run_ops(cases, cpu)
    assert isinstance(got[2], RuntimeError) and "No suitable implementations" in str(got[2])
    for i, (case, g) in enumerate(zip(cases, got)):
        _assert_same(g, _run_alone(single, case, cpu), f"case {i}")
    assert batched.batch_counts["batched"] >= 3
    # execution_info stays per case (its own compiled model), whatever run_ops did before
    assert batched.execution_info(cases[0], cpu)["precision"] == "int8"


def test_cases_that_cannot_be_prepared_get_the_error_run_op_raises(single, cpu):
    """An op the backend does not run and a float64 FakeQuantize input fail before any model is
    built: their slots hold run_op's one-line InputError; the other cases are still batched."""
    fq = [
        OpCase("fake_quant", [np.linspace(-1, 1, 6, dtype=F32).reshape(2, 3) * k, F32(0.01 * k), np.int32(k)],
               {"quant_min": -128, "quant_max": 127})
        for k in range(1, 5)
    ]
    cases = [fq[0], OpCase("MatMulInteger", []), fq[1],
             OpCase("fake_quant", [np.zeros((2, 3)), F32(0.1), np.int32(0)], {"quant_min": 0, "quant_max": 255}),
             fq[2], fq[3]]
    batched = OpenVinoBackend()
    got = batched.run_ops(cases, cpu)
    assert isinstance(got[1], InputError) and "does not run op" in str(got[1])
    assert isinstance(got[3], InputError) and "float32" in str(got[3])
    for i, (case, g) in enumerate(zip(cases, got)):
        _assert_same(g, _run_alone(single, case, cpu), f"case {i}")
    assert batched.batch_counts["batched"] == 4 and batched.batch_counts["failed_batches"] == 0


@_SETTINGS
@given(data=st.data())
def test_mixed_ops_keep_their_slots(data):
    """FakeQuantize and ONNX cases interleaved, and cases already compiled alone (run from the
    cache): each slot still holds its own case's output."""
    b = OpenVinoBackend()
    if not b.availability().available:
        pytest.skip(b.availability().reason)
    cpu = b.variants()[0]
    names = ["QuantizeLinear", "DequantizeLinear", "fake_quant", "fake_quantize_range"]
    strategies = [FAMILIES[n].cases(runner.constraints_for(b, FAMILIES[n].op, cpu)) for n in names]
    cases = data.draw(st.lists(st.one_of(strategies), min_size=12, max_size=12), label="cases")
    cached = data.draw(st.sets(st.integers(0, 11), max_size=3), label="compiled alone first")
    alone = {i: _run_alone(b, cases[i], cpu) for i in sorted(cached)}
    got = b.run_ops(cases, cpu)
    fresh = OpenVinoBackend()
    for i, (case, g) in enumerate(zip(cases, got)):
        _assert_same(g, alone[i] if i in alone else _run_alone(fresh, case, cpu), f"case {i} ({case.op})")


def test_a_model_with_quantize_branches_changes_dequantize_linear(single, cpu):
    """Why run_ops puts one op per model (found by test_mixed_ops_keep_their_slots): alone, a
    DequantizeLinear is one FMA with a folded zero point (the ``openvino`` profile); in a model that
    also holds a QuantizeLinear, the plugin fuses Convert -> Subtract -> Multiply into a Subgraph
    and rounds twice, as the ONNX spec does (1 ulp apart here). The branches share nothing."""
    import openvino as ov

    from qverify.backends.openvino_backend import compile_config
    from qverify.reference.quantize import dequantize

    q, s, z = np.array([163, 69], np.uint8), np.array([1.0, 1.7675734], F32), np.array([0, 130], np.uint8)
    dq = OpCase("DequantizeLinear", [q, s, z], {"axis": 0})
    ql = OpCase("QuantizeLinear", [np.array([0.5, 1.5], F32), F32(1.0), np.uint8(0)])
    built = [onnx_graphs.build(dq), onnx_graphs.build(ql)]
    merged = onnx_graphs.merge(built)
    core = ov.Core()
    model = core.read_model(merged.serialized())
    model.reshape({"b0_x": [2], "b1_x": [2]})
    compiled = core.compile_model(model, "CPU", compile_config())
    feeds = {**merged.feeds(0, built[0], dq), **merged.feeds(1, built[1], ql)}
    beside_quantize = np.asarray(compiled(feeds)[compiled.output(merged.output_names[0][0])])
    alone = single.run_op(dq, cpu)
    np.testing.assert_array_equal(alone, dequantize(q, s, z, axis=0, profile="openvino"))
    np.testing.assert_array_equal(beside_quantize, dequantize(q, s, z, axis=0, profile="onnx"))
    assert alone[1] != beside_quantize[1]
    # run_ops keeps them apart, so each computes what it computes alone
    got = OpenVinoBackend().run_ops([dq, ql, dq], cpu)
    _assert_same(got[0], alone, "DequantizeLinear")
    _assert_same(got[1], single.run_op(ql, cpu), "QuantizeLinear")


# -- onnx_graphs.merge -----------------------------------------------------------------------------


def test_merge_prefixes_every_branch_and_checks():
    built = [onnx_graphs.build(c) for c in _quantize_cases(3)]
    merged = onnx_graphs.merge(built)
    onnx.checker.check_model(merged.model)
    assert merged.input_names == (("b0_x",), ("b1_x",), ("b2_x",))
    assert [o.name for o in merged.model.graph.output] == [n[0] for n in merged.output_names]
    assert len({i.name for i in merged.model.graph.initializer}) == 3 * len(built[0].model.graph.initializer)
    dims = {d.dim_param for vi in merged.model.graph.input for d in vi.type.tensor_type.shape.dim}
    assert len(dims) == 3 * 2  # rank-2 inputs, symbolic dimensions not shared between branches
    with pytest.raises(InputError, match="one distinct prefix per model"):
        onnx_graphs.merge(built, ["p_", "p_", "q_"])
    with pytest.raises(InputError, match="got no models"):
        onnx_graphs.merge([])


def test_run_ops_without_openvino_raises_backend_unavailable(monkeypatch):
    """Fail closed: no openvino means BackendUnavailable naming the fix, not errors in the slots."""
    from qverify.backends.base import Variant
    from qverify.errors import BackendUnavailable

    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    b = OpenVinoBackend()
    case = OpCase("fake_quantize_range", [np.zeros(2, F32), F32(0), F32(1), F32(0), F32(1)], {"levels": 256})
    with pytest.raises(BackendUnavailable, match="pip install openvino"):
        b.run_ops([case, case], Variant("cpu", "openvino", {"precision": "f32"}))
    assert b.run_ops([], Variant("cpu", "openvino", {})) == []
