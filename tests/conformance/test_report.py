"""The conformance report, Markdown and HTML, rendered from a small hand-built document that has
every kind of row (exact, explained, failed, skipped), execution counts, deviations of each kind, a
``when`` condition and a stale entry; and ``qverify conformance`` writing all three files at once
(or none of them)."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qverify.conformance import command, report
from qverify.conformance.report import render_html, render_markdown

from . import _fakes

EVIL = "<script>alert(1)</script>"


def _row(backend, op, variant, status, **kw):
    row = {"backend": backend, "op": op, "variant": variant, "status": status, "reason": "", "examples": 100,
           "exact_vs_profile": 1.0, "exact_vs_spec": 1.0, "max_lsb_vs_spec": 0.0, "spec_defined": 100,
           "unexplained": 0, "repros": [], "profile": "onnxruntime", "version": "1.32.0", "explained": {},
           "seconds": 0.1, "execution": {}}
    row.update(kw)
    return row


def _doc(out: str = "/reports/conf") -> dict:
    return {
        "qverify_version": "9.9.9",
        "examples": 100,
        "seed": 7,
        "backends": {
            "rt": {"available": True, "version": "1.32.0", "reason": "", "capabilities": ["op", "model"]},
            "gone": {"available": False, "version": None, "reason": "gone is not installed; fix: pip install gone",
                     "capabilities": []},
        },
        "rows": [
            _row("rt", "QuantizeLinear", "plain", "ok", execution={"int8": 100}),
            _row("rt", "qdq_conv", "plain", "ok", exact_vs_profile=0.97, max_lsb_vs_spec=1.0,
                 explained={"rt/qdq_*/plain": 3}, execution={"int8": 97, "float": 3}),
            _row("rt", "QuantizeLinear", "fused", "failed", exact_vs_profile=0.9, max_lsb_vs_spec="inf",
                 unexplained=10, reason=f"got 5, want 4 {EVIL} | pipe",
                 repros=[f"{out}/repros/rt__QuantizeLinear__fused"]),
            _row("rt", "qdq_conv", "fused", "skipped", examples=0, exact_vs_profile=None, exact_vs_spec=None,
                 max_lsb_vs_spec=None, spec_defined=0, reason="fused needs AVX-512"),
            _row("gone", "*", "*", "skipped", examples=0, exact_vs_profile=None, exact_vs_spec=None,
                 max_lsb_vs_spec=None, spec_defined=0, profile="", version=None,
                 reason="gone is not installed; fix: pip install gone"),
        ],
        "deviations": [
            {"id": "rt/qdq_*/plain", "cause": "float sums in another order", "profile": "onnxruntime",
             "tolerance_lsb": 1.0, "versions": "==1.32.*", "upstream": "https://example.invalid/issue/1",
             "explained_examples": 3, "kind": "values", "match": None,
             "when": {"kernel": [1, 1], "stride_max": ">1"}},
            {"id": "rt/QLinearConv/*", "cause": "rejects odd zero points", "profile": None, "tolerance_lsb": 0,
             "versions": "", "upstream": None, "explained_examples": 0, "kind": "error",
             "match": "zero point .* not supported", "when": {}},
            {"id": "rt/Gemm/*", "cause": "drops a batch dimension", "profile": None, "tolerance_lsb": 0,
             "versions": "", "upstream": None, "explained_examples": 2, "kind": "shape", "match": None},
        ],
        "stale_deviations": ["rt/QLinearConv/*"],
    }


class _Tags(HTMLParser):
    """Records every start/end tag; fails on an end tag that closes something other than the
    innermost open element (void elements aside)."""

    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.seen: dict[str, int] = {}
        self.titles: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen[tag] = self.seen.get(tag, 0) + 1
        a = dict(attrs)
        if "title" in a and tag == "td":
            self.titles.append(a["title"])
        if tag == "a":
            self.hrefs.append(a["href"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    assert p.stack == [], f"unclosed: {p.stack}"
    return p


def test_verdict_counts_unexplained_like_the_exit_status():
    v = report.verdict(_doc())
    assert (v["rows"], v["unexplained"], v["exit_status"]) == (5, 10, 1)
    assert v["counts"] == {"exact": 1, "explained": 1, "failed": 1, "skipped": 2}
    assert v["stale"] == ["rt/QLinearConv/*"] and v["fallback_rows"] == 1
    # a failed row that counted no example is still one unexplained
    d = _doc()
    d["rows"][2]["unexplained"] = 0
    assert report.verdict(d)["unexplained"] == 1
    d["rows"] = [r for r in d["rows"] if r["status"] != "failed"]
    assert report.verdict(d)["exit_status"] == 0


def test_float_fallback_is_any_float_kind_with_examples():
    assert report.fell_back({"execution": {"int8": 97, "float": 3}})
    assert report.fell_back({"execution": {"mixed": 1}})
    assert not report.fell_back({"execution": {"int8": 100, "float": 0}})
    assert not report.fell_back({"execution": {}}) and not report.fell_back({})


def test_markdown_has_verdict_execution_and_deviation_facts():
    md = render_markdown(_doc())
    assert "**Verdict:** 5 rows, 10 unexplained — exit status 1" in md
    # matrix: failed cell bold, fallback marked, skipped cell
    assert "| qdq_conv | ok* 97.0% † | skip |" in md
    assert "| QuantizeLinear | ok 100.0% | **FAIL (10 unexpl.)** |" in md
    # the rows table gains "executed as"
    assert "| executed as |" in md
    assert "| rt | qdq_conv | plain | onnxruntime | ok | 100 | int8 97, float 3 | 97.0% |" in md
    assert "| rt | qdq_conv | fused | onnxruntime | skipped | 0 | - |" in md
    assert "\\| pipe" in md  # a pipe in a reason does not break the table
    # deviations
    assert "applies when kernel = [1, 1], stride_max > 1" in md
    assert "tolerance: 1 LSB" in md and "versions `==1.32.*`" in md
    assert "explains: runtime errors matching `zero point .* not supported`" in md
    assert "explains: wrong output shape" in md
    assert "### `rt/QLinearConv/*` — **stale: explained nothing in this run**" in md
    assert md.count("stale: explained nothing") == 1


def test_old_documents_without_the_new_fields_still_render():
    d = _doc()
    for r in d["rows"]:
        del r["execution"]
    for dev in d["deviations"]:
        for k in ("kind", "match", "when"):
            dev.pop(k, None)
    md = render_markdown(d)
    html = render_html(d)
    assert "| rt | qdq_conv | plain | onnxruntime | ok | 100 | - | 97.0% |" in md
    assert "applies when" not in md and "explains:" not in md and "†" not in md
    _parse(html)
    assert "applies when" not in html


def test_html_is_well_formed_escaped_and_complete():
    html = render_html(_doc(), out_dir="/reports/conf")
    p = _parse(html)
    assert p.seen["table"] == 3 and p.seen["style"] == 1
    assert "script" not in p.seen and "<script>" not in html  # the reason's <script> is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = " ".join(" ".join(p.text).split())
    assert "5 rows, 10 unexplained" in text and "exit status 1: something is unexplained" in text
    assert "qverify 9.9.9" in text and "seed 7" in text
    assert f"got 5, want 4 {EVIL} | pipe" in text
    # matrix cells: colour class and hover title with the reason / explanation / execution
    assert 'class="failed" title="got 5, want 4 &lt;script&gt;' in html
    assert any(t.startswith("97.0% bit-exact with profile onnxruntime; explained: rt/qdq_*/plain (3)")
               and t.endswith("executed as int8 97, float 3") for t in p.titles)
    assert "fused needs AVX-512" in p.titles
    assert 'class="explained"' in html and 'class="exact"' in html and 'class="skipped"' in html
    assert "ok* 97.0% †" in text and "int8 97, float 3 †" in text
    # repro linked relative to the report folder; upstream linked
    assert "repros/rt__QuantizeLinear__fused" in p.hrefs
    assert "https://example.invalid/issue/1" in p.hrefs
    # deviations: facts and the stale flag
    assert "applies when kernel = [1, 1], stride_max > 1" in text
    assert "explains: runtime errors matching zero point .* not supported" in text
    assert "explains: wrong output shape" in text
    assert "Stale deviations (explained nothing in this run): rt/QLinearConv/*" in text
    assert "rt/QLinearConv/* — stale: explained nothing in this run" in text
    # backends table: the unavailable one with its reason
    assert "gone no - gone is not installed; fix: pip install gone" in text


def test_html_links_repros_outside_out_dir_as_written():
    html = render_html(_doc("/elsewhere"), out_dir="/reports/conf")
    assert "file:///elsewhere/repros/rt__QuantizeLinear__fused" in _parse(html).hrefs


def test_a_clean_document_passes_in_html():
    d = copy.deepcopy(_doc())
    d["rows"] = [r for r in d["rows"] if r["status"] != "failed"]
    d["stale_deviations"] = []
    html = render_html(d)
    assert 'class="gate pass"' in html and "exit status 0: nothing is unexplained" in html
    assert "Stale deviations" not in html


@pytest.fixture
def fakes():
    _fakes.register_all()


def _run(out: Path) -> int:
    return command.main(["--backends", "fake_reference,fake_unavailable", "--examples", "5",
                         "--ops", "QuantizeLinear", "--out", str(out), "--quiet"])


def test_command_writes_html_with_json_and_md_or_nothing(tmp_path, fakes, monkeypatch, capsys):
    out = tmp_path / "conf"
    assert _run(out) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "conformance.html", "conformance.json", "conformance.md"]
    data = json.loads((out / "conformance.json").read_text())
    html = (out / "conformance.html").read_text(encoding="utf-8")
    _parse(html)
    assert f"{len(data['rows'])} rows, 0 unexplained" in html and "fakeruntime is not installed" in html
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(data, *, out_dir=None):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(command, "render_html", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        _run(out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # previous report whole
    assert not list(tmp_path.glob(".conformance-*")) and not list(tmp_path.glob(".conf.old-*"))
    capsys.readouterr()
