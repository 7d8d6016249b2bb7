"""The generic differential runner: backend x variant x op family, drawn with Hypothesis.

For each example the backend's output is compared with the reference computed with the variant's
profile (must be bit-exact, or explained by a declared deviation) and with the ``onnx`` spec
profile (recorded as a distance in LSB). The same :func:`evaluate` backs the pytest differential
tests and ``qverify conformance``; nothing here branches on a backend's name.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qverify.backends.base import Backend, OpCase, Variant
from qverify.errors import BackendUnavailable, InputError

from .deviations import Deviation, Ledger
from .families import FAMILIES, Constraints, Family
from .features import case_features

SPEC_PROFILE = "onnx"
# Float outputs are compared in units of their scale: (a - b) / s for two float32 products q*s is
# an integer only up to rounding, so a tolerance holds within this many LSB more.
_LSB_SLACK = 1e-3


# ---------------------------------------------------------------------------------------------
# comparing one example


def lsb_distance(got: np.ndarray, want: np.ndarray, lsb: Any = 1.0) -> float:
    """Largest ``|got - want| / lsb`` over elements; NaN equals NaN, NaN vs a number (or a shape
    mismatch) is ``inf``."""
    g = np.asarray(got)
    w = np.asarray(want)
    if g.shape != w.shape:
        return float("inf")
    if g.size == 0:
        return 0.0
    g64 = g.astype(np.float64)
    w64 = w.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (g64 == w64) | (np.isnan(g64) & np.isnan(w64))
        d = np.abs(g64 - w64) / np.broadcast_to(np.asarray(lsb, np.float64), g64.shape)
    d = np.where(same, 0.0, d)
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max())


def exactly_equal(got: np.ndarray, want: np.ndarray) -> bool:
    """Same shape and the same values (NaN equals NaN; integer values compared exactly)."""
    g, w = np.asarray(got), np.asarray(want)
    if g.shape != w.shape:
        return False
    if g.dtype.kind in "iub" and w.dtype.kind in "iub":
        return bool(np.array_equal(g.astype(np.int64), w.astype(np.int64)))
    return bool(np.array_equal(g.astype(np.float64), w.astype(np.float64), equal_nan=True))


@dataclass
class Outcome:
    """What one example showed."""

    exact_vs_profile: bool
    exact_vs_spec: bool
    lsb_vs_profile: float
    lsb_vs_spec: float
    explained_by: Deviation | None = None
    error: str | None = None  # the runtime raised on a valid input
    got: np.ndarray | None = None
    want: np.ndarray | None = None

    @property
    def unexplained(self) -> bool:
        return not self.exact_vs_profile and self.explained_by is None

    def describe(self) -> str:
        if self.error:
            msg = f"runtime raised: {self.error}"
            return msg + (f"; explained by deviation {self.explained_by.key!r}" if self.explained_by else "")
        if self.exact_vs_profile:
            return "bit-exact vs profile"
        msg = f"differs from its profile by up to {self.lsb_vs_profile:g} LSB"
        if self.got is not None and self.want is not None and self.got.shape == self.want.shape:
            g = np.asarray(self.got, np.float64).ravel()
            w = np.asarray(self.want, np.float64).ravel()
            bad = np.flatnonzero(~((g == w) | (np.isnan(g) & np.isnan(w))))
            if bad.size:
                i = int(bad[0])
                msg += f" ({bad.size} of {g.size} elements; first at flat index {i}: got {g[i]!r}, should be {w[i]!r})"
        if self.explained_by is not None:
            msg += f"; explained by deviation {self.explained_by.key!r}"
        return msg


class _Refused(Exception):
    """The reference refuses the input (undefined behaviour in the profile): not an example."""


def _reference(family: Family, case: OpCase, profile: str) -> np.ndarray:
    try:
        # overflow to inf and NaN are part of what the profiles define: no NumPy warnings
        with np.errstate(all="ignore"):
            return np.asarray(family.reference(case, profile))
    except InputError as err:
        raise _Refused(str(err)) from None


def evaluate(
    backend: Backend,
    variant: Variant,
    family: Family,
    case: OpCase,
    *,
    deviations: Sequence[Deviation] = (),
    spec_profile: str = SPEC_PROFILE,
) -> Outcome | None:
    """Run one example. ``None`` when the variant's reference refuses the input (the profile calls
    it undefined), so it is not counted. ``deviations``: the candidates for this row."""
    try:
        want = _reference(family, case, variant.profile)
    except _Refused:
        return None
    crash = declared_crash(case, deviations)
    if crash is not None:
        return crash_outcome(crash, want)
    try:
        got = np.asarray(backend.run_op(case, variant))
    except BackendUnavailable:
        raise
    except Exception as err:  # the runtime rejected a valid input: a finding, recorded as such
        return error_outcome(case, err, want, deviations)
    return compare(family, case, variant, got, want, deviations=deviations, spec_profile=spec_profile)


def declared_crash(case: OpCase, deviations: Sequence[Deviation]) -> Deviation | None:
    """The ``kind = "crash"`` entry that applies to ``case`` (such cases must not be run)."""
    crashes = [d for d in deviations if d.kind == "crash"]
    if not crashes:
        return None
    feats = case_features(case)
    return next((d for d in crashes if d.applies(feats)), None)


def crash_outcome(dev: Deviation, want: np.ndarray | None) -> Outcome:
    return Outcome(False, False, float("inf"), float("inf"), dev,
                   error="not run: the runtime kills the process on this case (declared crash)", want=want)


def error_outcome(case: OpCase, err: BaseException, want: np.ndarray | None,
                  deviations: Sequence[Deviation] = ()) -> Outcome:
    """The Outcome of an example on which the runtime raised ``err``: unexplained unless a
    ``kind = "error"`` deviation applies to the case and matches the message."""
    msg = f"{type(err).__name__}: {' '.join(str(err).split())}"[:400]  # whole message, one line
    explained = None
    if deviations:
        feats = case_features(case)
        explained = next((d for d in deviations if d.matches_error(msg) and d.applies(feats)), None)
    return Outcome(False, False, float("inf"), float("inf"), explained, error=msg, want=want)


def compare(
    family: Family,
    case: OpCase,
    variant: Variant,
    got: np.ndarray,
    want: np.ndarray,
    *,
    deviations: Sequence[Deviation] = (),
    spec_profile: str = SPEC_PROFILE,
) -> Outcome:
    """Compare a runtime output ``got`` with the reference ``want`` (the variant's profile) and
    with the spec profile; look for a declared deviation when they differ."""
    lsb = family.lsb(case)
    exact_p = exactly_equal(got, want)
    lsb_p = 0.0 if exact_p else lsb_distance(got, want, lsb)
    if spec_profile == variant.profile:
        exact_s, lsb_s = exact_p, lsb_p
    else:
        try:
            spec = _reference(family, case, spec_profile)
            exact_s = exactly_equal(got, spec)
            lsb_s = 0.0 if exact_s else lsb_distance(got, spec, lsb)
        except _Refused:
            exact_s, lsb_s = False, float("nan")  # the spec leaves this input undefined: not counted
    explained = None
    if not exact_p and deviations:
        feats = case_features(case)
        for dev in deviations:
            if not dev.applies(feats):
                continue
            if dev.kind == "shape":
                if got.shape != want.shape:
                    explained = dev
                    break
                continue
            if dev.kind != "values":
                continue
            other = want if dev.profile in (None, variant.profile) else _try_reference(family, case, dev.profile)
            if other is not None and lsb_distance(got, other, lsb) <= dev.tolerance_lsb + _LSB_SLACK:
                explained = dev
                break
    return Outcome(exact_p, exact_s, lsb_p, lsb_s, explained, got=got, want=want)


def _try_reference(family: Family, case: OpCase, profile: str) -> np.ndarray | None:
    try:
        return _reference(family, case, profile)
    except _Refused:
        return None


# ---------------------------------------------------------------------------------------------
# one row: backend x variant x family


@dataclass
class Row:
    backend: str
    op: str
    variant: str
    status: str  # ok | skipped | failed
    reason: str = ""
    examples: int = 0
    exact_vs_profile: float | None = None
    exact_vs_spec: float | None = None  # over the examples the spec defines (spec_defined)
    max_lsb_vs_spec: float | None = None
    spec_defined: int = 0
    unexplained: int = 0
    repros: list[str] = field(default_factory=list)
    profile: str = ""
    version: str | None = None
    explained: dict[str, int] = field(default_factory=dict)  # deviation id -> examples
    # how the runtime says it executed the examples (Backend.execution_info "precision": int8,
    # mixed, float, ...) -> examples; empty when the backend does not say or the op has no
    # integer compute layer
    execution: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("max_lsb_vs_spec",):
            v = d[k]
            if isinstance(v, float) and not np.isfinite(v):
                d[k] = "inf" if v > 0 else None
        return d


def constraints_for(backend: Backend, op: str, variant: Variant) -> Constraints:
    """The backend's narrowing of the draws (``Backend.case_constraints``), as Constraints."""
    hook = getattr(backend, "case_constraints", None)
    c = hook(op, variant) if hook is not None else {}
    if isinstance(c, Constraints):
        return c
    return Constraints(**dict(c or {}))


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", s)


def run_row(
    backend: Backend,
    variant: Variant,
    family: Family,
    *,
    examples: int = 100,
    seed: int = 0,
    ledger: Ledger | None = None,
    repro_dir: Path | None = None,
) -> Row:
    """Draw ``examples`` cases (default 100) with Hypothesis seed ``seed`` (default 0) and summarise
    them; when something is unexplained, shrink it and write a repro under ``repro_dir``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable

    av = backend.availability()
    row = Row(backend.name, family.name, variant.name, "skipped", profile=variant.profile, version=av.version)
    if not av.available:
        row.reason = av.reason
        return row
    if not backend.supports(family.op, variant):
        row.reason = f"{backend.name} does not run {family.op!r} in variant {variant.name!r}"
        return row
    try:
        from qverify.reference import profiles

        profiles.get(variant.profile)
    except InputError as err:
        row.status, row.reason = "failed", f"variant {variant.name!r} names an unknown profile: {err}"
        return row
    cands = ledger.candidates(backend.name, family.name, variant.name, av.version) if ledger else []
    constraints = constraints_for(backend, family.op, variant)
    strategy = family.cases(constraints)
    stats = {"n": 0, "n_spec": 0, "exact_p": 0, "exact_s": 0, "max_s": 0.0, "unexplained": 0}
    first_bad: list[OpCase] = []
    explained: dict[str, int] = {}
    executed: dict[str, int] = {}
    info_hook = getattr(backend, "execution_info", None)
    batch_hook = getattr(backend, "run_ops", None)

    def tally(case: OpCase, out: Outcome) -> None:
        stats["n"] += 1
        stats["exact_p"] += out.exact_vs_profile
        if not np.isnan(out.lsb_vs_spec):  # NaN: the spec leaves this input undefined
            stats["n_spec"] += 1
            stats["exact_s"] += out.exact_vs_spec
            stats["max_s"] = max(stats["max_s"], out.lsb_vs_spec)
        if out.unexplained:
            stats["unexplained"] += 1
            if not first_bad:
                first_bad.append(case)
        elif out.explained_by is not None:
            explained[out.explained_by.key] = explained.get(out.explained_by.key, 0) + 1
            if ledger is not None:
                ledger.mark(out.explained_by)
        if info_hook is not None and out.error is None and family.compute:
            how = _executed_as(info_hook, case, variant)
            executed[how] = executed.get(how, 0) + 1

    pending: list[tuple[OpCase, np.ndarray]] = []

    def record(case: OpCase) -> None:
        from hypothesis import reject

        out = evaluate(backend, variant, family, case, deviations=cands)
        if out is None:
            reject()
        tally(case, out)

    def collect(case: OpCase) -> None:  # batched backends: draw now, run all drawn cases after
        from hypothesis import reject

        try:
            want = _reference(family, case, variant.profile)
        except _Refused:
            reject()
        pending.append((case, want))

    common = dict(database=None, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
    body = collect if batch_hook is not None else record
    probe = hseed(seed)(settings(max_examples=examples, phases=[Phase.generate], **common)(given(strategy)(body)))
    t0 = time.perf_counter()
    try:
        try:
            probe()
        except Unsatisfiable as err:  # Hypothesis gave up (too many refused draws): report, don't hide
            if stats["n"] == 0 and not pending:
                first = str(err).split(". ")[0]
                row.status, row.reason = "failed", f"no example could be run: {type(err).__name__}: {first}"[:300]
                return row
        if pending:
            crashes = [declared_crash(c, cands) for c, _ in pending]
            for (case, want), dev in zip(pending, crashes):
                if dev is not None:
                    tally(case, crash_outcome(dev, want))
            pending = [p for p, dev in zip(pending, crashes) if dev is None]
        if pending:
            results = batch_hook([c for c, _ in pending], variant)
            for (case, want), got in zip(pending, results, strict=True):
                if isinstance(got, BackendUnavailable):
                    raise got
                if isinstance(got, BaseException):
                    tally(case, error_outcome(case, got, want, cands))
                else:
                    tally(case, compare(family, case, variant, np.asarray(got), want, deviations=cands))
    except BackendUnavailable as err:
        row.reason = err.reason
        return row
    except Exception as err:  # a crash in the adapter, the strategy or the reference: the row fails
        row.status = "failed"
        row.reason = f"crashed after {stats['n']} examples: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        row.examples = stats["n"]
        return row
    row.seconds = time.perf_counter() - t0
    n = stats["n"]
    row.examples = n
    row.exact_vs_profile = stats["exact_p"] / n if n else None
    row.spec_defined = stats["n_spec"]
    row.exact_vs_spec = stats["exact_s"] / stats["n_spec"] if stats["n_spec"] else None
    row.max_lsb_vs_spec = stats["max_s"] if stats["n_spec"] else None
    row.unexplained = stats["unexplained"]
    row.explained = explained
    row.execution = executed
    row.status = "failed" if row.unexplained else "ok"
    if constraints.note:
        row.reason = f"draws narrowed: {constraints.note}"
    if n == 0:
        row.status, row.reason = "failed", "the reference refused every drawn example"
    if row.unexplained:
        case = _shrink(backend, variant, family, strategy, cands, examples, seed, common) or first_bad[0]
        if family.minimize is not None:
            case = family.minimize(case, lambda c: _fails(backend, variant, family, c, cands))
        out = evaluate(backend, variant, family, case, deviations=cands)
        row.reason = (out.describe() if out is not None else "unexplained mismatch") + (
            f" [draws narrowed: {constraints.note}]" if constraints.note else "")
        if repro_dir is not None:
            row.repros.append(str(write_repro(repro_dir, backend, variant, family, case, out)))
    return row


def _executed_as(hook, case: OpCase, variant: Variant) -> str:
    try:
        return str(hook(case, variant).get("precision", "unknown"))
    except Exception as err:  # noqa: BLE001 - the example itself ran; say that this could not be read
        return f"unknown ({type(err).__name__})"


def _fails(backend: Backend, variant: Variant, family: Family, case: OpCase, cands: Sequence[Deviation]) -> bool:
    try:
        out = evaluate(backend, variant, family, case, deviations=cands)
    except Exception:  # a candidate the backend cannot even take is not a smaller repro
        return False
    return out is not None and out.unexplained


def _shrink(backend, variant, family, strategy, cands, examples, seed, common) -> OpCase | None:
    from hypothesis import Phase, given, settings
    from hypothesis import seed as hseed

    class _Bad(Exception):
        def __init__(self, case: OpCase):
            super().__init__("unexplained")
            self.case = case

    def check(case: OpCase) -> None:
        out = evaluate(backend, variant, family, case, deviations=cands)
        if out is not None and out.unexplained:
            raise _Bad(case)

    test = hseed(seed)(
        settings(max_examples=examples, phases=[Phase.generate, Phase.shrink], **common)(given(strategy)(check))
    )
    try:
        test()
    except _Bad as bad:
        return bad.case
    except Exception:  # noqa: S110 - shrinking is best effort; the first failing draw is kept
        return None
    return None


# ---------------------------------------------------------------------------------------------
# repros

_REPLAY = '''"""Replay a conformance mismatch: {backend} / {family} / variant {variant}.

Run from anywhere with qverify installed: python replay.py
"""
import json
from pathlib import Path

import numpy as np

from qverify.backends import registry
from qverify.backends.base import OpCase
from qverify.conformance import families

here = Path(__file__).resolve().parent
meta = json.loads((here / "case.json").read_text())
arrays = np.load(here / "inputs.npz")
inputs = [arrays[f"in{{i}}"] if f"in{{i}}" in arrays else None for i in range(meta["n_inputs"])]
case = OpCase(meta["op"], inputs, meta["attrs"])
backend = registry.get(meta["backend"])
variant = next(v for v in backend.variants() if v.name == meta["variant"])
got = np.asarray(backend.run_op(case, variant))
want = np.asarray(families.get(meta["family"]).reference(case, variant.profile))
print("runtime  :", got.ravel().tolist())
print("reference ({{}}):".format(variant.profile), want.ravel().tolist())
print("equal    :", np.array_equal(got.astype(np.float64), want.astype(np.float64), equal_nan=True))
'''


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def write_repro(
    directory: Path, backend: Backend, variant: Variant, family: Family, case: OpCase, outcome: Outcome | None
) -> Path:
    """Write ``inputs.npz``, ``case.json`` and ``replay.py`` for one case; returns the folder."""
    d = Path(directory) / _safe(f"{backend.name}__{family.name}__{variant.name}")
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"in{i}": np.asarray(a) for i, a in enumerate(case.inputs) if a is not None}
    np.savez(d / "inputs.npz", **arrays)
    meta = {
        "backend": backend.name, "variant": variant.name, "family": family.name, "op": case.op,
        "attrs": _jsonable(case.attrs), "n_inputs": len(case.inputs), "profile": variant.profile,
        "finding": outcome.describe() if outcome is not None else "",
    }
    (d / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
    (d / "replay.py").write_text(_REPLAY.format(backend=backend.name, family=family.name, variant=variant.name))
    return d


# ---------------------------------------------------------------------------------------------
# the whole matrix


@dataclass
class Report:
    rows: list[Row]
    ledger: Ledger
    backends: dict[str, dict[str, Any]]
    examples: int
    seed: int

    @property
    def unexplained(self) -> int:
        return sum(r.unexplained for r in self.rows) + sum(1 for r in self.rows if r.status == "failed" and not r.unexplained)

    def to_dict(self) -> dict[str, Any]:
        import qverify

        names = set(self.backends)
        return {
            "qverify_version": qverify.__version__,
            "examples": self.examples,
            "seed": self.seed,
            "backends": self.backends,
            "rows": [r.to_dict() for r in self.rows],
            "deviations": [
                {**_dev_dict(d), "explained_examples": self.ledger.used.get(d.key, 0)}
                for d in self.ledger.entries
            ],
            "stale_deviations": [d.key for d in self.ledger.stale(names)],
        }


def _dev_dict(d: Deviation) -> dict[str, Any]:
    return {"id": d.id, "key": d.key, "cause": d.cause, "profile": d.profile, "tolerance_lsb": d.tolerance_lsb,
            "versions": d.versions, "upstream": d.upstream, "kind": d.kind, "match": d.match,
            "when": dict(d.when)}


def run(
    backend_names: Iterable[str],
    *,
    examples: int = 100,
    seed: int = 0,
    families: Sequence[str] | None = None,
    repro_dir: Path | None = None,
    deviations_dir: Path | None = None,
    progress: bool = False,
) -> Report:
    """Every backend x variant x family (default: all families); see :func:`run_row`."""
    from qverify.backends import registry

    names = list(backend_names)
    ledger = Ledger.for_backends(names, directory=deviations_dir)
    fams = [FAMILIES[f] if f in FAMILIES else _unknown_family(f) for f in (families or list(FAMILIES))]
    rows: list[Row] = []
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            backend = registry.get(name)
        except ImportError as err:  # the adapter module itself is missing or broken
            info[name] = {"available": False, "version": None, "reason": f"adapter not importable: {err}",
                          "capabilities": []}
            rows.append(Row(name, "*", "*", "skipped", f"adapter not importable: {err}"))
            continue
        av = backend.availability()
        info[name] = {"available": av.available, "version": av.version, "reason": av.reason,
                      "capabilities": list(av.capabilities)}
        variants = list(backend.variants())
        if not av.available and not variants:
            rows.append(Row(name, "*", "*", "skipped", av.reason, version=av.version))
            continue
        for variant in variants:
            for fam in fams:
                if not backend.supports(fam.op, variant):
                    continue
                row = run_row(backend, variant, fam, examples=examples, seed=seed, ledger=ledger, repro_dir=repro_dir)
                if progress:
                    print(f"{row.status.upper():8} {name}/{fam.name}/{variant.name} "
                          f"n={row.examples} unexplained={row.unexplained} {row.reason}", flush=True)
                rows.append(row)
        if not any(r.backend == name for r in rows):
            rows.append(Row(name, "*", "*", "skipped", av.reason or "no op is supported", version=av.version))
    return Report(rows, ledger, info, examples, seed)


def _unknown_family(name: str) -> Family:
    raise InputError(f"unknown op family {name!r}", f"choose from: {', '.join(FAMILIES)}")


def variants_by_name(backend: Backend) -> Mapping[str, Variant]:
    return {v.name: v for v in backend.variants()}
