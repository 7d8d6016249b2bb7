"""``qverify conformance``: the op-level differential report of every runtime.

    qverify conformance [--backends torch,onnxruntime,openvino,tensorrt] [--examples N] [--seed S]
                        [--ops QuantizeLinear,...] [--out DIR]

Writes ``conformance.json``, ``conformance.md`` and ``conformance.html`` (and shrunk repros under
``repros/``) into DIR (default ``reports/conformance``), built in a temporary folder and moved into
place, so a failed run leaves the previous report whole. Exit status 0 when nothing is unexplained,
1 when something is, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from qverify.errors import InputError

from . import families as _families
from .report import render_html, render_markdown
from .runner import Report, run


def _parser() -> argparse.ArgumentParser:
    from qverify.backends import registry

    ap = argparse.ArgumentParser(prog="qverify conformance", description="op-level differential tests of every runtime")
    ap.add_argument("--backends", default=",".join(registry.names()),
                    help="comma-separated backends (default: %(default)s)")
    ap.add_argument("--examples", type=int, default=100, help="Hypothesis examples per row (default: 100)")
    ap.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default: 0)")
    ap.add_argument("--ops", default="", help="comma-separated op families (default: all: "
                    + ", ".join(_families.names()) + ")")
    ap.add_argument("--out", default="reports/conformance", help="output folder (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def _split(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    from qverify.backends import registry

    ap = _parser()
    try:
        args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    except SystemExit as exc:  # argparse: --help is 0, bad usage 2
        return int(exc.code or 0)
    backends = _split(args.backends)
    if not backends:
        raise InputError("--backends is empty", f"name at least one of: {', '.join(registry.names())}")
    for b in backends:
        if b not in registry.names():
            raise InputError(f"unknown backend {b!r}", f"choose from: {', '.join(registry.names())}")
    ops = _split(args.ops) or None
    for o in ops or ():
        _families.get(o)
    if args.examples < 1:
        raise InputError(f"--examples {args.examples} is not positive", "give a number of examples >= 1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".conformance-", dir=out.parent))
    try:
        report = run(backends, examples=args.examples, seed=args.seed, families=ops,
                     repro_dir=tmp / "repros", progress=not args.quiet)
        _write(report, tmp, out)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    n_bad = report.unexplained
    print(f"qverify conformance: {len(report.rows)} rows, {n_bad} unexplained; wrote {out / 'conformance.md'}")
    return 1 if n_bad else 0


def _write(report: Report, tmp: Path, final: Path) -> None:
    data = report.to_dict()
    # repro paths are reported where they will live after the move
    for row in data["rows"]:
        row["repros"] = [str(final / Path(p).relative_to(tmp)) for p in row["repros"]]
    (tmp / "conformance.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    (tmp / "conformance.md").write_text(render_markdown(data), encoding="utf-8")
    (tmp / "conformance.html").write_text(render_html(data, out_dir=final), encoding="utf-8")


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)  # put the previous report back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
