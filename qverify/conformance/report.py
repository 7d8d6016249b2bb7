"""Render a conformance result (the ``conformance.json`` document) for a person, as Markdown
(:func:`render_markdown`) and as a self-contained HTML page (:func:`render_html`): the verdict,
the backends, the matrix at a glance, then every row, then each deviation with its cause.

Both read the document only; fields added later (a row's ``execution``, a deviation's ``kind``,
``match`` and ``when``) are optional, so older documents still render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

# an ``execution`` key naming a float kind: those examples fell back from integer kernels
_FLOAT_KIND = re.compile(r"float|mixed|half|double|bf16|^fp?\d+$", re.IGNORECASE)
_OPERATORS = (">=", "<=", "!=", "==", ">", "<")
FALLBACK_MARK = "†"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _spec(row: Mapping[str, Any]) -> str:
    pct = _pct(row["exact_vs_spec"])
    defined = row.get("spec_defined", row["examples"])
    return pct if defined == row["examples"] else f"{pct} of {defined}"


def _lsb(row: Mapping[str, Any]) -> str:
    lsb = row["max_lsb_vs_spec"]
    return "-" if lsb is None else (lsb if isinstance(lsb, str) else f"{lsb:g}")


def _execution(row: Mapping[str, Any]) -> str:
    """``{"int8": 97, "float": 3}`` -> ``"int8 97, float 3"``; ``"-"`` when not reported."""
    ex = row.get("execution") or {}
    return ", ".join(f"{k} {n}" for k, n in ex.items()) or "-"


def fell_back(row: Mapping[str, Any]) -> bool:
    """True when the row's ``execution`` counts any example under a float kind (a key containing
    ``float``, ``mixed``, ``half``, ``double``, ``bf16``, or ``fp16``/``f32``-like)."""
    return any(n and _FLOAT_KIND.search(str(k)) for k, n in (row.get("execution") or {}).items())


def _explained(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} ({n})" for k, n in (row.get("explained") or {}).items())


def _reason(row: Mapping[str, Any]) -> str:
    reason = row.get("reason") or ""
    if row.get("explained"):
        reason = (reason + " " if reason else "") + "explained: " + _explained(row)
    return reason


def _state(row: Mapping[str, Any]) -> tuple[str, str]:
    """(class, text) of a matrix cell: ``exact`` / ``explained`` / ``failed`` / ``skipped``."""
    if row["status"] == "skipped":
        return "skipped", "skip"
    if row["status"] == "failed":
        return "failed", f"FAIL ({row['unexplained']} unexpl.)" if row["unexplained"] else "FAIL"
    if row["exact_vs_profile"] == 1.0:
        return "exact", f"ok {_pct(row['exact_vs_profile'])}"
    return "explained", f"ok* {_pct(row['exact_vs_profile'])}"


def _cell_title(row: Mapping[str, Any]) -> str:
    state, _ = _state(row)
    if state == "exact":
        parts = [f"{row['examples']} examples, all bit-exact with profile {row.get('profile') or '-'}"]
    elif state == "explained":
        parts = [f"{_pct(row['exact_vs_profile'])} bit-exact with profile {row.get('profile') or '-'}; "
                 f"explained: {_explained(row) or '-'}"]
    else:
        parts = [_reason(row) or row["status"]]
    if row.get("execution"):
        parts.append(f"executed as {_execution(row)}")
    return "; ".join(parts)


def _columns(rows: list[Mapping[str, Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    """(backend, variant) columns and op rows of the matrix, in first-seen order."""
    cols: list[tuple[str, str]] = []
    ops: list[str] = []
    for r in rows:
        if r["op"] == "*":
            continue
        if (r["backend"], r["variant"]) not in cols:
            cols.append((r["backend"], r["variant"]))
        if r["op"] not in ops:
            ops.append(r["op"])
    return cols, ops


def verdict(data: Mapping[str, Any]) -> dict[str, Any]:
    """The overall verdict, counted as ``qverify conformance`` counts its exit status: unexplained
    examples plus failed rows that counted none."""
    rows = data["rows"]
    unexplained = sum(r["unexplained"] for r in rows) + sum(
        1 for r in rows if r["status"] == "failed" and not r["unexplained"])
    counts = {s: 0 for s in ("exact", "explained", "failed", "skipped")}
    for r in rows:
        counts[_state(r)[0]] += 1
    exit_status = 1 if unexplained else 0
    meaning = ("exit status 1: something is unexplained (an example matching neither its profile nor a "
               "declared deviation, or a failed row)" if exit_status else
               "exit status 0: nothing is unexplained")
    return {"rows": len(rows), "unexplained": unexplained, "exit_status": exit_status, "meaning": meaning,
            "counts": counts, "stale": list(data.get("stale_deviations") or []),
            "fallback_rows": sum(1 for r in rows if fell_back(r))}


def _verdict_line(v: Mapping[str, Any]) -> str:
    c = v["counts"]
    return (f"{v['rows']} rows, {v['unexplained']} unexplained — {v['meaning']}. "
            f"Rows: {c['exact']} exact, {c['explained']} ok with explained deviations, {c['failed']} failed, "
            f"{c['skipped']} skipped; {len(v['stale'])} stale deviations.")


def _condition(key: str, value: Any) -> str:
    if isinstance(value, str):
        for op in _OPERATORS:
            if value.startswith(op):
                return f"{key} {op} {value[len(op):].strip()}"
        return f"{key} = {value}"
    return f"{key} = {json.dumps(value)}"


def _facts(d: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """A deviation's facts as (label, value, value_is_code)."""
    kind = d.get("kind") or "values"
    facts = [("explained examples: ", str(d["explained_examples"]), False)]
    if kind == "error":
        facts.append(("explains: runtime errors matching ", d["match"], True) if d.get("match")
                     else ("explains: runtime errors (any message)", "", False))
    elif kind == "shape":
        facts.append(("explains: wrong output shape", "", False))
        if d.get("match"):
            facts.append(("matching ", d["match"], True))
    else:
        if kind != "values":
            facts.append(("explains: ", str(kind), False))
        facts.append(("tolerance: ", f"{d['tolerance_lsb']:g} LSB", False))
        if d.get("match"):
            facts.append(("matching ", d["match"], True))
    when = d.get("when") or {}
    if when:
        facts.append(("applies when ", ", ".join(_condition(k, v) for k, v in when.items()), False))
    if d.get("profile"):
        facts.append(("reproduced by profile ", d["profile"], True))
    if d.get("versions"):
        facts.append(("versions ", d["versions"], True))
    if d.get("upstream"):
        facts.append(("upstream: ", d["upstream"], False))
    return facts


def _md_code(s: str) -> str:
    """``s`` as inline Markdown code, with a fence longer than any backtick run inside it."""
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# Markdown


def render_markdown(data: dict[str, Any]) -> str:
    rows = data["rows"]
    v = verdict(data)
    out = ["# qverify conformance", ""]
    out.append(f"{data['examples']} Hypothesis examples per row, seed {data['seed']}, qverify {data['qverify_version']}.")
    out.append("Each example must equal the reference **with the variant's profile** bit-exactly, or be "
               "explained by a declared deviation; the distance from the `onnx` spec profile is recorded in LSB.")
    out.append("")
    out.append(f"**Verdict:** {_verdict_line(v)}")
    out.append("")
    out.append("## Backends")
    out.append("")
    out.append("| backend | available | version | reason / capabilities |")
    out.append("|---|---|---|---|")
    for name, b in data["backends"].items():
        extra = b["reason"] or ", ".join(b["capabilities"])
        out.append(f"| {name} | {'yes' if b['available'] else 'no'} | {b['version'] or '-'} | {_md_cell(extra)} |")
    out.append("")
    cols, ops = _columns(rows)
    if cols:
        out.append("## Matrix (exact match with the variant's profile; `ok*`: mismatches all explained by deviations)")
        out.append("")
        out.append("| op | " + " | ".join(f"{b}<br>{var}" for b, var in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        index = {(r["backend"], r["variant"], r["op"]): r for r in rows}
        for op in ops:
            cells = []
            for b, var in cols:
                r = index.get((b, var, op))
                if r is None:
                    cells.append("")
                    continue
                state, text = _state(r)
                text = f"**{text}**" if state == "failed" else text
                cells.append(text + (f" {FALLBACK_MARK}" if fell_back(r) else ""))
            out.append(f"| {op} | " + " | ".join(cells) + " |")
        out.append("")
        if v["fallback_rows"]:
            out.append(f"{FALLBACK_MARK}: some examples fell back to float execution (see \"executed as\").")
            out.append("")
    out.append("## Rows")
    out.append("")
    out.append("| backend | op | variant | profile | status | examples | executed as | exact vs profile | "
               "exact vs spec | max LSB vs spec | unexplained | reason | repros |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    # exact vs spec is over the examples the onnx spec defines (it leaves NaN input undefined)
    for r in rows:
        repros = "<br>".join(_md_code(p) for p in r["repros"])
        out.append(f"| {r['backend']} | {r['op']} | {r['variant']} | {r.get('profile') or '-'} | {r['status']} | "
                   f"{r['examples']} | {_execution(r)} | {_pct(r['exact_vs_profile'])} | {_spec(r)} | {_lsb(r)} | "
                   f"{r['unexplained']} | {_md_cell(_reason(r))} | {repros} |")
    out.append("")
    out.append("## Declared deviations")
    out.append("")
    if not data["deviations"]:
        out.append("None declared for these backends.")
    for d in data["deviations"]:
        stale = " — **stale: explained nothing in this run**" if d.get("key", d["id"]) in v["stale"] else ""
        out.append(f"### {_md_code(d['id'])}{stale}")
        out.append("")
        out.append(d["cause"])
        out.append("")
        out.append("; ".join(label + (_md_code(val) if code else val) for label, val, code in _facts(d)) + ".")
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML


def _href(path: str, out_dir: str | Path | None) -> str:
    p = Path(path)
    if out_dir is not None:
        try:
            return quote(p.relative_to(Path(out_dir)).as_posix())
        except ValueError:
            pass
    return p.as_uri() if p.is_absolute() else quote(p.as_posix())


def render_html(data: dict[str, Any], *, out_dir: str | Path | None = None) -> str:
    """The document as one self-contained HTML page (inline CSS, no scripts). Repro paths under
    ``out_dir`` (the folder the page is written to; default ``None``: none) are linked relative to
    it; other repro paths are linked as written (absolute ones as ``file://`` URIs)."""
    import jinja2

    rows = data["rows"]
    v = verdict(data)
    cols, ops = _columns(rows)
    index = {(r["backend"], r["variant"], r["op"]): r for r in rows}
    matrix = []
    for op in ops:
        cells = []
        for b, var in cols:
            r = index.get((b, var, op))
            if r is None:
                cells.append(None)
                continue
            state, text = _state(r)
            cells.append({"cls": state, "text": text, "title": _cell_title(r),
                          "mark": FALLBACK_MARK if fell_back(r) else ""})
        matrix.append({"op": op, "cells": cells})
    table = [
        {
            "backend": r["backend"], "op": r["op"], "variant": r["variant"], "profile": r.get("profile") or "-",
            "status": r["status"], "cls": _state(r)[0], "examples": r["examples"], "execution": _execution(r),
            "fell_back": fell_back(r), "exact_vs_profile": _pct(r["exact_vs_profile"]), "exact_vs_spec": _spec(r),
            "lsb": _lsb(r), "unexplained": r["unexplained"], "reason": _reason(r),
            "repros": [{"path": p, "href": _href(p, out_dir)} for p in r["repros"]],
        }
        for r in rows
    ]
    backends = [
        {"name": name, "available": b["available"], "version": b["version"] or "-",
         "extra": b["reason"] or ", ".join(b["capabilities"])}
        for name, b in data["backends"].items()
    ]
    deviations = [
        {"id": d["id"], "cause": d["cause"], "stale": d.get("key", d["id"]) in v["stale"],
         "facts": [{"label": label, "value": val, "code": code,
                    "link": label.startswith("upstream") and val.startswith(("https://", "http://"))}
                   for label, val, code in _facts(d)]}
        for d in data["deviations"]
    ]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qverify.conformance", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("conformance.html.j2").render(
        examples=data["examples"], seed=data["seed"], version=data["qverify_version"],
        verdict=v, verdict_line=_verdict_line(v), backends=backends, cols=cols, matrix=matrix, rows=table,
        deviations=deviations, mark=FALLBACK_MARK,
    )
