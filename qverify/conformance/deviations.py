"""Known runtime deviations, as data: ``qverify/deviations/<backend>.toml``.

Each file holds an array of tables::

    [[deviation]]
    id = "onnxruntime/QLinearConv/*"        # glob over "backend/op/variant"
    cause = "why the runtime differs from its profile, in one or two sentences"
    profile = "onnx"                         # optional: the reference profile that reproduces it
    tolerance_lsb = 1                        # optional (default 0): allowed distance in LSB
    versions = ">=1.20"                      # optional (default: every version), PEP 440 specifier
    upstream = "https://github.com/..."      # optional: the upstream issue
    when = { kernel = [1, 1], stride_max = ">1" }   # optional: case conditions (all must hold)
    kind = "values"                          # optional: values (default) | error | shape | crash
    match = "SIGSEGV"                        # kind = "error" only: regex the error must match

A mismatch against the variant's own profile is *explained* by an entry whose ``id`` matches,
whose ``versions`` contain the runtime's version and whose ``when`` conditions hold for the case
(features: :data:`qverify.conformance.features.FEATURES`), when

* ``kind = "values"``: the runtime's output equals the reference computed with the entry's
  ``profile`` (or with the variant's profile when ``profile`` is absent) within ``tolerance_lsb``;
* ``kind = "error"``: the runtime raised on the (valid) input and its message matches ``match``;
* ``kind = "shape"``: the runtime returned an output of another shape than the reference's;
* ``kind = "crash"``: the runtime kills the process on these cases (a segfault in an in-process
  runtime cannot be contained), so matching cases are *not run*: each drawn one is counted as
  explained by the entry, and a test must pin the crash in a subprocess so that a fixed runtime
  shows up.

``error``, ``shape`` and ``crash`` accept whatever the runtime did, so they must say ``when``. Entries that
explain nothing during a run are reported as stale.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qverify.errors import SuiteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEVIATIONS_DIR = Path(__file__).resolve().parent.parent / "deviations"
_KEYS = {"id", "cause", "profile", "tolerance_lsb", "versions", "upstream", "when", "kind", "match"}
KINDS = ("values", "error", "shape", "crash")
_REQUIRED = ("id", "cause")


@dataclass(frozen=True)
class Deviation:
    """One declared deviation; see the module docstring for the fields."""

    id: str
    cause: str
    profile: str | None = None
    tolerance_lsb: float = 0
    versions: str = ""
    upstream: str | None = None
    source: str = ""  # file it came from, for messages
    when: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: str = "values"
    match: str | None = None

    @property
    def key(self) -> str:
        """The entry's name in reports and in the ledger: its id, plus its conditions when it has
        some (several entries may share an id with different conditions)."""
        if not self.when:
            return self.id
        return self.id + " when " + ", ".join(_condition_text(k, v) for k, v in self.when.items())

    def applies(self, features: Mapping[str, Any]) -> bool:
        """True when every ``when`` condition holds for the case's features."""
        from .features import conditions_hold

        return conditions_hold(self.when, features)

    def matches_error(self, message: str) -> bool:
        return self.kind == "error" and self.match is not None and re.search(self.match, message) is not None

    def matches(self, backend: str, op: str, variant: str, version: str | None) -> bool:
        """True when ``backend/op/variant`` matches the glob and ``version`` is in the range
        (an unknown version matches only an entry without a range)."""
        if not fnmatch.fnmatchcase(f"{backend}/{op}/{variant}", self.id):
            return False
        if not self.versions:
            return True
        if version is None:
            return False
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        try:
            return Version(version) in SpecifierSet(self.versions)
        except InvalidVersion:
            return False


def _condition_text(name: str, expected: Any) -> str:
    if isinstance(expected, str) and expected.lstrip()[:1] in ("<", ">", "=", "!"):
        return name + expected.replace(" ", "")
    if isinstance(expected, bool):
        return f"{name}={'true' if expected else 'false'}"
    return f"{name}={expected}"


def _fail(where: str, what: str, fix: str) -> SuiteError:
    return SuiteError(f"{where}: {what}", fix)


def parse(data: Mapping[str, Any], source: str = "<deviations>", *, check_profiles: bool = True) -> list[Deviation]:
    """Validate a parsed TOML document and return its entries (SuiteError on the first problem)."""
    extra = set(data) - {"deviation"}
    if extra:
        raise _fail(source, f"unknown top-level key(s) {sorted(extra)}", "write entries as [[deviation]] tables")
    entries = data.get("deviation", [])
    if not isinstance(entries, list):
        raise _fail(source, "'deviation' must be an array of tables", "write entries as [[deviation]] tables")
    known_profiles = _profile_names() if check_profiles else None
    out: list[Deviation] = []
    for i, e in enumerate(entries, 1):
        where = f"{source}: deviation {i}" + (f" ({e.get('id')!r})" if isinstance(e, dict) and "id" in e else "")
        if not isinstance(e, dict):
            raise _fail(where, "is not a table", "write it as a [[deviation]] table")
        unknown = sorted(set(e) - _KEYS)
        if unknown:
            raise _fail(where, f"unknown key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(_KEYS))}")
        for k in _REQUIRED:
            if not isinstance(e.get(k), str) or not e[k].strip():
                raise _fail(where, f"{k!r} is missing or empty", f"give {k} as a non-empty string")
        if e["id"].count("/") != 2:
            raise _fail(where, f"id {e['id']!r} is not 'backend/op/variant'", "use a glob such as 'onnxruntime/QLinearConv/*'")
        tol = e.get("tolerance_lsb", 0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            raise _fail(where, f"tolerance_lsb={tol!r} is not a number >= 0", "give tolerance_lsb as e.g. 0 or 1")
        versions = e.get("versions", "")
        if not isinstance(versions, str):
            raise _fail(where, "versions must be a string", "use a PEP 440 specifier such as '>=1.20,<2'")
        if versions:
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(versions)
            except InvalidSpecifier:
                raise _fail(where, f"versions={versions!r} is not a PEP 440 specifier", "write e.g. '>=1.20,<2'") from None
        profile = e.get("profile")
        if profile is not None:
            if not isinstance(profile, str):
                raise _fail(where, "profile must be a string", "name a profile from `qverify profiles`")
            if known_profiles is not None and profile not in known_profiles:
                raise _fail(where, f"unknown profile {profile!r}", f"choose from: {', '.join(sorted(known_profiles))}")
        up = e.get("upstream")
        if up is not None and not isinstance(up, str):
            raise _fail(where, "upstream must be a string (a URL)", "give the upstream issue's URL")
        when = e.get("when", {})
        if not isinstance(when, dict):
            raise _fail(where, "when must be a table of case conditions", "write e.g. when = { kernel = [1, 1] }")
        from .features import FEATURES, check_condition

        for name, expected in when.items():
            problem = check_condition(name, expected)
            if problem:
                raise _fail(where, f"when: {problem}", f"case features: {', '.join(FEATURES)}")
        kind = e.get("kind", "values")
        if kind not in KINDS:
            raise _fail(where, f"kind={kind!r} is not one of {', '.join(KINDS)}", f"use kind = one of {', '.join(KINDS)}")
        if kind != "values" and not when:
            raise _fail(where, f"kind={kind!r} accepts any runtime output, so it needs case conditions",
                        "add when = { ... } naming the cases it applies to")
        match = e.get("match")
        if kind == "error":
            if not isinstance(match, str) or not match:
                raise _fail(where, "kind='error' needs match, a regex for the error message", "add match = '...'")
            try:
                re.compile(match)
            except re.error as err:
                raise _fail(where, f"match={match!r} is not a regex ({err})", "fix the regular expression") from None
        elif match is not None:
            raise _fail(where, "match is only for kind = 'error'", "remove match or set kind = 'error'")
        out.append(Deviation(e["id"], e["cause"].strip(), profile, float(tol), versions, up, source,
                             dict(when), kind, match))
    return out


def _profile_names() -> set[str] | None:
    try:
        from qverify.reference import profiles
    except ImportError:  # the reference is not importable: cannot check names here
        return None
    return set(profiles.names())


def load(backend: str, *, directory: Path | None = None, check_profiles: bool = True) -> list[Deviation]:
    """Entries of ``<directory>/<backend>.toml`` (default directory: ``qverify/deviations``);
    an absent file means no deviations."""
    path = (directory or DEVIATIONS_DIR) / f"{backend}.toml"
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML ({err})", "fix the syntax") from None
    entries = parse(data, str(path), check_profiles=check_profiles)
    seen: set[str] = set()
    for d in entries:
        if d.key in seen:
            raise SuiteError(f"{path}: two deviations are both {d.key!r}", "merge them or give them different when conditions")
        seen.add(d.key)
        if not d.id.startswith(f"{backend}/") and not d.id.startswith("*/"):
            raise SuiteError(f"{path}: deviation {d.id!r} is for another backend", f"ids in this file start with '{backend}/'")
    return entries


@dataclass
class Ledger:
    """The deviations of a run and which of them explained something (to report stale ones)."""

    entries: list[Deviation] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)  # key -> examples explained

    @classmethod
    def for_backends(cls, backends: Iterable[str], *, directory: Path | None = None) -> Ledger:
        entries: list[Deviation] = []
        for b in backends:
            entries += load(b, directory=directory)
        return cls(entries)

    def candidates(self, backend: str, op: str, variant: str, version: str | None) -> list[Deviation]:
        return [d for d in self.entries if d.matches(backend, op, variant, version)]

    def mark(self, dev: Deviation) -> None:
        self.used[dev.key] = self.used.get(dev.key, 0) + 1

    def stale(self, backends: Iterable[str] | None = None) -> list[Deviation]:
        """Entries (of ``backends``, default all) that explained no example in this run."""
        keep = set(backends) if backends is not None else None
        return [
            d for d in self.entries
            if d.key not in self.used and (keep is None or d.id.split("/", 1)[0] in keep)
        ]
