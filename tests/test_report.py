"""The report page: rendered from a saved run folder (the 0.1.0 fixture), user mistakes, and what
a real browser (headless Chromium, where installed) shows of it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from genbound.cli import main
from genbound.report.verdict import selection_size, tightest, vacuous_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run-quick-demo-v0.1.0")

# The fixture is a run folder exactly as genbound 0.1.0 wrote it; it must never be regenerated.
FIXTURE_SHA256 = {
    "result.json": "73a55ee01a55ed28",
    "samples.npz": "334c728f2a6913db",
    "config.toml": "b03ef618c931a228",
    "versions.json": "a4d6df63b2562ce2",
}


class _Page(HTMLParser):
    """Collects what the tests check: rows of the summary table, result cells, external references."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.in_summary = False
        self.in_summary_body = False
        self.summary_rows: list[dict[str, str]] = []
        self.cells: dict[str, str] = {}
        self._cell: str | None = None
        self._text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not v.startswith("#"):
                self.external.append(f"{tag} {k}={v}")
        if tag == "link":
            self.external.append(f"link {a}")
        if tag == "table" and a.get("id") == "summary-table":
            self.in_summary = True
        if self.in_summary and tag == "tbody":
            self.in_summary_body = True
        if self.in_summary_body and tag == "tr":
            self.summary_rows.append(a)
        if tag == "td" and "data-r" in a:
            self._cell, self._text = a["data-r"], []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells[self._cell] = "".join(self._text).strip()
            self._cell = None
        if tag == "tbody":
            self.in_summary_body = False
        if tag == "table" and self.in_summary and not self.in_summary_body:
            self.in_summary = False

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _result_key(r: dict) -> str:
    K = str(r["K"]) if r.get("K") is not None else "e^%.4g" % r["log_K"]
    kappa = "-" if r.get("kappa") is None else repr(float(r["kappa"]))
    return f"{r['model']}|{r['name']}|{K}|{kappa}"


def _check_page(text: str, doc: dict) -> _Page:
    """The summary has one row per model; every result of result.json is a cell showing its value."""
    page = _parse(text)
    models = list(dict.fromkeys(m["model"] for m in doc["models"]))
    assert [r.get("data-model") for r in page.summary_rows] == models
    for r in doc["results"]:
        key = _result_key(r)
        assert key in page.cells, key
        shown = page.cells[key].rstrip("✗").strip()
        assert shown == ("null" if r["value"] is None else f"{r['value']:.4f}"), (key, shown)
    assert len(page.cells) == len(doc["results"])
    assert not page.external, page.external[:5]
    assert "http://" not in text and "https://" not in text
    return page


def _doc() -> dict:
    with open(os.path.join(FIXTURE, "result.json")) as fh:
        return json.load(fh)


def test_fixture_is_unchanged():
    """Later format changes are tested against these files: they stay as 0.1.0 wrote them."""
    got = {}
    for name in ("result.json", "samples.npz", "config.toml", "versions.json"):
        with open(os.path.join(FIXTURE, name), "rb") as fh:
            got[name] = hashlib.sha256(fh.read()).hexdigest()[:16]
    assert got == FIXTURE_SHA256


def test_report_renders_the_saved_run(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", FIXTURE, "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    doc = _doc()
    _check_page(text, doc)
    assert len(text.encode()) < 1_000_000
    # the verdicts: tightest certified of the memorizing model is vacuous, and the page says why
    assert "vacuous</b> (≥ 1): main = 1" in text or "vacuous</b> (≥ 1): robustness = 1" in text
    for section in ("Provenance", "config.toml", "Stability evidence", "Timings", "Versions", "sha256:6894de88bca2fa1b"):
        assert section in text, section


def test_report_default_out_and_side_by_side(tmp_path):
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(FIXTURE, a)
    shutil.copytree(FIXTURE, b)
    assert main(["report", str(a)]) == 0
    assert (a / "report.html").exists()
    out = tmp_path / "both.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    page = _parse(out.read_text(encoding="utf-8"))
    models = list(dict.fromkeys(m["model"] for m in _doc()["models"]))
    # the same model of the two runs next to each other, runs told apart
    assert [r["data-model"] for r in page.summary_rows] == [m for m in models for _ in range(2)]
    assert [r["data-run"] for r in page.summary_rows[:2]] == ["run", "run #2"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "genbound", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("case", ["empty", "missing", "file", "wrong-schema", "bad-json"])
def test_not_a_run_folder_is_one_line_exit_2(tmp_path, case):
    target = tmp_path / "x"
    if case == "empty":
        target.mkdir()
    elif case == "file":
        target.write_text("hello")
    elif case == "wrong-schema":
        target.mkdir()
        (target / "result.json").write_text(json.dumps({"schema": "something/9", "results": []}))
    elif case == "bad-json":
        target.mkdir()
        (target / "result.json").write_text("{not json")
    p = _cli("report", str(target))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genbound report: error: "), p.stderr
    assert "Traceback" not in p.stderr and str(target) in lines[0]
    assert not (tmp_path / "x" / "report.html").exists()


def test_several_runs_need_out_and_out_needs_a_folder(tmp_path, capsys):
    assert main(["report", FIXTURE, FIXTURE]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", FIXTURE, "--out", str(tmp_path / "missing" / "page.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", FIXTURE, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_verdict_helpers():
    rs = [
        {"model": "m", "name": "holdout_cp", "kind": "certified", "value": 0.05, "log_K": 1.0, "terms": {}},
        {"model": "m", "name": "xu_mannor", "kind": "certified", "value": 1.3, "log_K": 1.0, "kappa": 0.1,
         "terms": {"train_error": 0.0, "robustness": 1.0, "concentration": 0.3},
         "assumptions": ["0-1 loss", "eps_cert = 1; stability method 'pgd' is not sound"]},
        {"model": "m", "name": "theorem_h", "kind": "certified", "value": 1.2, "log_K": 2.0,
         "terms": {"train_error": 0.1, "main": 0.3, "concentration": 0.8}},
        {"model": "m", "name": "stability_b", "kind": "diagnostic", "value": 0.01, "log_K": 1.0},
    ]
    assert tightest(rs, "certified", exclude=("holdout_cp",))["name"] == "theorem_h"
    assert tightest(rs, "certified")["name"] == "holdout_cp"
    assert tightest(rs, "diagnostic")["name"] == "stability_b"
    assert selection_size(rs, "certified", exclude=("holdout_cp",)) == 2
    assert vacuous_reason(rs[0]) is None
    assert vacuous_reason(rs[1]).startswith("robustness = 1: eps_cert = 1")
    why = vacuous_reason(rs[2])  # no term reaches 1 alone: the largest is named with the sum
    assert why.startswith("concentration = 0.8 is the largest term") and "main 0.3" in why


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_page_in_headless_chromium(tmp_path):
    """What a browser builds from the page: the summary with one row per model, every result, and a
    screenshot that is not blank."""
    page = tmp_path / "report.html"
    assert main(["report", FIXTURE, "--out", str(page)]) == 0
    browser = _chromium()
    # a fresh profile per call: a second browser on a profile still held by the first one's exiting
    # children attaches to it and never returns
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"]
    url = page.resolve().as_uri()
    # the same page, with the reader's clicks replayed once it has loaded: K = 100 in the first
    # model's filter, then sort its table by the first kappa column
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.read_text(encoding="utf-8").replace("</body>", _CLICKS + "</body>"), encoding="utf-8")
    dom = subprocess.run(common + [f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", clicked.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table" in dom.stdout
    _check_page(dom.stdout.replace(_CLICKS, ""), _doc())
    _check_clicks(dom.stdout)
    shot = tmp_path / "shot.png"
    p = subprocess.run(common + [f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}",
                                 "--window-size=1280,1600", url], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 1600)
        colors = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colors) > 50  # text, tables and figures, not one flat colour
        white = sum(c for c, px in colors if px == (255, 255, 255))
        assert white < 0.97 * rgb.size[0] * rgb.size[1]


_CLICKS = """<script>
(function(){var sel=document.querySelector('select[data-target="m0-0"]');sel.value='100';
sel.dispatchEvent(new Event('change'));
var th=document.querySelectorAll('table[data-filter="m0-0"] thead th')[5];th.click();})();
</script>"""


def _check_clicks(dom: str) -> None:
    """After the replayed clicks: rows and figures of K = 10 hidden, the rest shown; the table's rows
    in ascending order of the clicked column, empty cells last."""
    import re

    table = re.search(r'<table class="results sortable" data-filter="m0-0".*?</table>', dom, re.S).group(0)
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    rows = re.findall(r"<tr ([^>]*)>(.*?)</tr>", body, re.S)
    assert rows
    for attrs, _ in rows:
        hidden = re.search(r"\bhidden\b", attrs) is not None
        assert hidden == ('data-k="10"' in attrs), attrs
    figs = re.search(r'<div class="figs" data-filter="m0-0">(.*?)</div>', dom, re.S).group(1)
    for attrs in re.findall(r"<figure ([^>]*)>", figs):
        if "data-k" in attrs:
            assert (re.search(r"\bhidden\b", attrs) is not None) == ('data-k="10"' in attrs), attrs
    col = []
    for _, cells in rows:
        tds = re.findall(r"<td([^>]*)>", cells)
        m = re.search(r'data-v="([^"]+)"', tds[5])
        col.append(None if m is None else float(m.group(1)))
    nums = [v for v in col if v is not None]
    assert nums and nums == sorted(nums)
    assert col == nums + [None] * (len(col) - len(nums))


def test_run_without_heldout_set(tmp_path):
    """No held-out set: no held-out line, no covers marks, the page still holds every result."""
    doc = _doc()
    for m in doc["models"]:
        m["heldout_error"], m["m"] = None, 0
    doc["results"] = [dict(r, heldout_error=None, covers=None) for r in doc["results"]
                      if r["name"] in ("xu_mannor", "kawaguchi", "theorem_n", "stability_b")]
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps(doc))
    assert main(["report", str(run)]) == 0
    text = (run / "report.html").read_text(encoding="utf-8")
    _check_page(text, doc)
    assert "no held-out set" in text and '<span class="mk">✗' not in text and "does not cover</span>" not in text
