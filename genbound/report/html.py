"""The report page: one self-contained HTML file per run (or several runs side by side).

Drawn only from a run folder's files (:func:`genbound.report.run.load_run`), so ``demo``,
``evaluate`` and ``genbound report RUN_DIR`` write the same page. Everything is inline: CSS,
a few lines of JavaScript (sorting, the K filter, saving a figure), figures as SVG. Nothing is
fetched when the page opens.

Order of the page: the summary (per model: errors, tightest certified bound, tightest diagnostic,
covers or not, why a vacuous bound is vacuous), the bounds of every model against its held-out
error, one section per model (kappa sweep, stability, the full table with each result's terms and
assumptions), then provenance (config, data hashes, models, stability evidence, timings, versions,
files).
"""

from __future__ import annotations

import json
import math
import os
from html import escape
from typing import Any, Iterable, Sequence

from genbound.errors import UserInputError
from genbound.fileio import check_output_file, write_text
from genbound.report import plots, style
from genbound.report.run import Run, load_run
from genbound.report.verdict import (ModelView, holdout_reference, is_vacuous, k_text, model_views,
                                     selection_size, tightest, vacuous_reason)


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> str:
    """Render the page of one or several run folders and write it (atomically) to ``out``.

    ``out`` defaults to ``<run>/report.html`` for one run; several runs need it. Returns the path.
    """
    if not run_dirs:
        raise UserInputError("give at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:  # two folders with the same name (runs/a/x, runs/b/x): number them
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} #{seen[r.label]}"
    if out is None:
        if len(runs) > 1:
            raise UserInputError("several runs: say where the page goes with --out FILE")
        out = os.path.join(runs[0].folder, "report.html")
    out = check_output_file(out, "--out")
    write_text(out, render_page(runs))
    return out


# ---------------------------------------------------------------- formatting helpers

def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.4g}"
    return escape(str(v))


def _swatch(name: str) -> str:
    cert = name in style.CERTIFIED
    return (f'<span class="nm"><span class="sw{"" if cert else " diag"}" style="--c:{style.color(name)}"></span>'
            f'<code>{escape(name)}</code></span>')


def _kind(kind: str) -> str:
    return f'<span class="kind {escape(kind)}">{escape(kind)}</span>'


def _value_cell(r: dict[str, Any] | None, extra: str = "") -> str:
    """A value with its marks: covers (nothing), does not cover (✗, red), vacuous (grey, ≥ 1)."""
    if r is None:
        return "<td></td>"
    v = r.get("value")
    rid = escape(f"{r['model']}|{r['name']}|{k_text(r)}|{_kappa_id(r.get('kappa'))}")
    if v is None:
        note = next((a for a in r.get("assumptions", []) if "finite" in a or "null" in a), "not finite")
        return f'<td class="v null" data-r="{rid}" data-v="Infinity" title="{escape(note)}">null{extra}</td>'
    cls, mark, tip = ["v"], "", []
    if r.get("covers") is False:
        cls.append("miss")
        mark = '<span class="mk">✗</span>'
        tip.append(f"below the held-out error {r.get('heldout_error', 0):.4f}: does not cover it")
    if r.get("kind") == "certified" and is_vacuous(r):
        cls.append("vac")
        tip.append("vacuous (≥ 1): see terms")
    return (f'<td class="{" ".join(cls)}" data-r="{rid}" data-v="{v!r}"'
            + (f' title="{escape("; ".join(tip))}"' if tip else "") + f">{_num(v)}{mark}{extra}</td>")


def _kappa_id(k: float | None) -> str:
    return "-" if k is None else repr(float(k))


def _kv(d: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """A two-column table of a record; nested values as compact JSON."""
    rows = []
    for k, v in d.items():
        if k in skip or v is None:
            continue
        if isinstance(v, (dict, list)):
            txt = f"<code>{escape(json.dumps(v, default=str))}</code>"
        else:
            txt = _cell(v)
        rows.append(f"<tr><th>{escape(str(k))}</th><td>{txt}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>' if rows else ""


def _figure(svg: str | None, name: str, caption: str = "") -> str:
    if not svg:
        return ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure data-name="{escape(name)}">{svg}{cap}'
            '<button class="save" type="button" title="save this figure as an SVG file">SVG</button></figure>')


# ---------------------------------------------------------------- sections

def _summary(views: list[ModelView], several: bool) -> str:
    head_run = "<th rowspan=2>run</th>" if several else ""
    out = ['<section id="summary"><h2>Summary</h2>',
           '<div class="scroll"><table id="summary-table" class="summary"><thead>',
           f"<tr><th rowspan=2>model</th>{head_run}<th rowspan=2>n / m<br><small>train / held-out</small></th>"
           "<th rowspan=2>train error</th><th rowspan=2>held-out error<br><small>[CP upper limit]</small></th>"
           '<th colspan=5 class="cert">tightest certified bound <small>(besides <code>holdout_cp</code>, shown with the held-out error)</small></th>'
           '<th colspan=4 class="diag">tightest diagnostic <small>(an estimate, not a bound)</small></th>'
           "<th rowspan=2>diagnostics below the held-out error</th></tr>",
           '<tr><th class="cert">result</th><th class="cert">K, kappa</th>'
           '<th class="cert">value</th><th class="cert">delta</th><th class="cert">verdict</th>'
           '<th class="diag">result</th><th class="diag">K, kappa</th>'
           '<th class="diag">value</th><th class="diag">verdict</th></tr></thead><tbody>']
    for v in views:
        meta = v.metas[0]
        cp = holdout_reference(v)
        he = v.heldout_error
        he_txt = _num(he) + (f'<br><small>[≤ {cp["value"]:.4f}]</small>' if cp else "")
        cert = tightest(v.results, "certified", exclude=("holdout_cp",))
        diag = tightest(v.results, "diagnostic")
        cells = [f'<td><a href="#{v.key}">{escape(v.name)}</a></td>']
        if several:
            cells.append(f"<td>{escape(v.run.label)}</td>")
        cells += [f"<td class=nw>{_num(meta.get('n'))} / {_num(meta.get('m'))}</td>", f"<td>{_num(v.train_error)}</td>",
                  f"<td>{he_txt}</td>"]
        if cert is None:
            cells.append('<td colspan=5 class="cert">no certified value</td>')
        else:
            n_sel = selection_size(v.results, "certified", exclude=("holdout_cp",))
            d = cert["delta"]
            pick = (f"smallest of {n_sel} certified values (result names × K); each holds at 1 − δ, the pick at "
                    + (f"1 − {n_sel}δ = {1 - n_sel * d:.3g}" if n_sel * d < 1 else f"1 − {n_sel}δ ≤ 0 (no joint guarantee)")
                    + " by the union bound (spec §5)") if n_sel > 1 else "the only certified value"
            cells += [f'<td class="cert">{_swatch(cert["name"])}</td>', f'<td class="cert">{_k_kappa(cert)}</td>',
                      _value_cell(cert).replace('<td class="', '<td class="cert '),
                      f'<td class="cert" title="{escape(pick)}">{cert["delta"]:g}<sup>†</sup></td>',
                      f'<td class="cert verdict">{_verdict(cert)}</td>']
        if diag is None:
            cells.append('<td colspan=4 class="diag">no diagnostic value</td>')
        else:
            cells += [f'<td class="diag">{_swatch(diag["name"])}</td>', f'<td class="diag">{_k_kappa(diag)}</td>',
                      _value_cell(diag).replace('<td class="', '<td class="diag '),
                      f'<td class="diag verdict">{_verdict(diag)}</td>']
        cells.append(f"<td>{_misses(v)}</td>")
        out.append(f'<tr data-model="{escape(v.name)}" data-run="{escape(v.run.label)}">{"".join(cells)}</tr>')
    out.append("</tbody></table></div>")
    out.append('<p class="legend"><sup>†</sup> Each certified value holds with probability at least 1 − δ on its own. '
               "The tightest one is picked among the certified values of every result name and K of the model "
               "(N of them, the minimum over kappa being free on one partition); as a pick it holds at 1 − N·δ by the "
               "union bound (spec §5; hover the δ for N). Each model's section gives the best over the K grid with δ "
               "split across the grid.</p>")
    out.append('<p class="legend"><span class="kind certified">certified</span> a high-probability upper bound on '
               "the test error: a theorem, under the assumptions listed with it. "
               '<span class="kind diagnostic">diagnostic</span> an estimate from the literature, not a bound. '
               '<span class="v miss">✗</span> the value is below the held-out error (it does not cover it). '
               '<span class="v vac">grey</span> a certified value ≥ 1: true, but it says nothing about a 0-1 error; '
               "the verdict names the term that makes it so. Values are never clipped. "
               "The held-out error's Clopper–Pearson upper limit (<code>holdout_cp</code>) is the reference every "
               "other number is judged against.</p></section>")
    return "".join(out)


def _k_kappa(r: dict[str, Any]) -> str:
    kappa = "" if r.get("kappa") is None else f"<br><small>κ = {style.kappa_text(r['kappa'])}</small>"
    return f"K = {k_text(r)}{kappa}"


def _verdict(r: dict[str, Any]) -> str:
    if r.get("covers") is None:
        cov = '<span class="na">no held-out set</span>'
    elif r["covers"]:
        cov = '<span class="ok">✓ covers</span>'
    else:
        cov = '<span class="bad">✗ does not cover</span>'
    if r.get("kind") == "certified" and is_vacuous(r):
        return f'{cov}<div class="vacwhy"><b>vacuous</b> (≥ 1): {escape(vacuous_reason(r) or "")}</div>'
    return cov


def _misses(v: ModelView) -> str:
    diag = [r for r in v.results if r.get("kind") == "diagnostic" and r.get("value") is not None]
    miss = [r for r in diag if r.get("covers") is False]
    if not diag:
        return "–"
    if not miss:
        return f'<span class="ok">none of {len(diag)}</span>'
    names = sorted({r["name"] for r in miss}, key=style.sort_key)
    return (f'<span class="bad">{len(miss)} of {len(diag)}</span>: '
            + ", ".join(f"<code>{escape(n)}</code>" for n in names))


def _across(views: list[ModelView]) -> str:
    Ks = list(dict.fromkeys(k for v in views for k in v.Ks))
    figs = "".join(_figure(plots.across_models_svg(views, K), f"bounds_vs_heldout-K{K}").replace(
        "<figure ", f'<figure data-k="{escape(K)}" ', 1) for K in Ks)
    return ('<section id="overview"><h2>Bounds against the held-out error, every model</h2>'
            f"{_k_filter('overview', Ks)}"
            "<p>Each result at its smallest value over the kappa grid (free on one partition, spec §5), beside the "
            "model's held-out error (black bar) and training error (red dots). Filled circles: certified; hollow "
            "diamonds: diagnostics. Hover a point for its value, K, kappa and delta.</p>"
            f'<div class="figs" data-filter="overview">{figs}</div></section>')


def _k_filter(target: str, Ks: list[str]) -> str:
    if len(Ks) < 2:
        return ""
    opts = '<option value="">all</option>' + "".join(f'<option value="{escape(k)}">{escape(k)}</option>' for k in Ks)
    return (f'<label class="kf">partition size K: <select data-target="{escape(target)}">{opts}</select></label>')


def _model_section(v: ModelView) -> str:
    meta = v.metas[0]
    part = meta.get("partition") or {}
    facts = [f"n = {_num(meta.get('n'))} training samples, m = {_num(meta.get('m'))} held-out samples",
             f"train error {_num(v.train_error)}, held-out error {_num(v.heldout_error)}",
             f"stability: {escape(str(meta.get('stability_method')))} "
             f"({'sound' if meta.get('stability_sound') else 'not sound: empirical flags'}), norm "
             f"{escape(str(meta.get('norm')))}",
             f"partition: {escape(str(part.get('kind', 'unspecified')))}, label-pure "
             f"{_num(part.get('label_pure'))}, K ∈ {{{', '.join(v.Ks)}}}, occupied cells |T| = "
             + ", ".join(f"{_num(m.get('|T|'))} (K={k_text(m)})" for m in v.metas)]
    sub = meta.get("stability_checked") or {}
    if sub.get("selection") in ("uniform", "cells") and sub.get("s", 0) < sub.get("n", 0):
        facts.append(f"stability checked on {_num(sub['s'])} of {_num(sub['n'])} training samples: "
                     + ("a uniform subsample; flag-dependent diagnostics are upper limits at 1 - δ_s = "
                        f"{_num(1 - sub['delta_s'])}, point estimates in their terms" if sub["selection"] == "uniform"
                        else "a verifier budget spent cell by cell; unverified samples prove nothing"))
    if v.record.get("fingerprint"):
        facts.append(f"weights fingerprint <code>{escape(str(v.record['fingerprint']))}</code>")
    if v.record.get("random_label_fraction"):
        facts.append(f"trained on labels of which {v.record['random_label_fraction']:g} are random "
                     "(memorization model)")
    figs = []
    for K in v.Ks:
        svg = plots.kappa_sweep_svg(v, K)
        if svg:
            figs.append(_figure(svg, f"kappa_sweep-{v.name}-K{K}").replace("<figure ", f'<figure data-k="{escape(K)}" ', 1))
    # the unstable fraction beside the first sweep (it does not depend on K)
    figs.insert(1, _figure(plots.stability_svg(v, v.Ks[0]), f"stability-{v.name}"))
    out = [f'<section class="model" id="{v.key}"><h3>{escape(v.label)}</h3>',
           "<ul class=facts>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul>",
           _k_filter(v.key, v.Ks),
           f'<div class="figs" data-filter="{v.key}">{"".join(figs)}</div>',
           _results_table(v),
           _grid_best(v), "</section>"]
    return "".join(out)


def _results_table(v: ModelView) -> str:
    kappas: list[float] = []
    for m in v.metas:
        for k in m.get("kappas") or []:
            if k not in kappas:
                kappas.append(k)
    kappas.sort()
    rows = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in v.results:
        groups.setdefault((r["name"], k_text(r)), []).append(r)
    Korder = v.Ks
    keys = sorted(groups, key=lambda nk: (Korder.index(nk[1]) if nk[1] in Korder else 99, style.sort_key(nk[0])))
    metas = {k_text(m): m for m in v.metas}
    for name, K in keys:
        rs = groups[(name, K)]
        kind = rs[0].get("kind", "?")
        by_kappa = {r.get("kappa"): r for r in rs}
        cells = [f'<td data-v="{style.sort_key(name)[0]}">{_swatch(name)}</td>', f"<td>{_kind(kind)}</td>",
                 f'<td data-v="{_kv_sort(metas.get(K, {}).get("log_K"))}">{escape(K)}</td>',
                 f'<td data-v="{_kv_sort(metas.get(K, {}).get("|T|"))}">{_num(metas.get(K, {}).get("|T|"))}</td>',
                 _value_cell(by_kappa.get(None))]
        cells += [_value_cell(by_kappa.get(k)) for k in kappas]
        cells.append(f'<td class="det">{_details(rs)}</td>')
        rows.append(f'<tr class="{escape(kind)}" data-k="{escape(K)}">{"".join(cells)}</tr>')
    m0 = v.metas[0]
    foot = []
    for label, key in (("unstable fraction", "unstable_fraction"), ("robust training error", "robust_train_error")):
        vals = dict(zip(m0.get("kappas") or [], m0.get(key) or []))
        if vals:
            foot.append(f'<tr class="stat"><td colspan=4>{label} (training samples, stability '
                        f'{escape(str(m0.get("stability_method")))})</td><td></td>'
                        + "".join(f"<td>{_num(vals.get(k))}</td>" for k in kappas) + "<td></td></tr>")
    heads = ('<tr><th data-sort="num">result</th><th data-sort="text">kind</th><th data-sort="num">K</th>'
             '<th data-sort="num">|T|</th><th data-sort="num">no kappa</th>'
             + "".join(f'<th data-sort="num">κ = {fmt_k(k)}<br><small>{style.kappa_255(k)}/255</small></th>' for k in kappas)
             + "<th>terms and assumptions</th></tr>")
    return (f'<table class="results sortable" data-filter="{v.key}" data-model="{escape(v.name)}">'
            f"<thead>{heads}</thead><tbody>{''.join(rows)}</tbody><tfoot>{''.join(foot)}</tfoot></table>"
            '<p class="hint">Click a column head to sort; click "terms" to see how a value decomposes and what it '
            "assumes.</p>")


def fmt_k(k: float) -> str:
    return f"{k:.4g}"


def _kv_sort(v: Any) -> str:
    return repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else "0"


def _details(rs: list[dict[str, Any]]) -> str:
    """Terms per kappa and the assumptions (each distinct line once) of one (result, K) row."""
    rs = sorted(rs, key=lambda r: (r.get("kappa") is not None, r.get("kappa") or 0.0))
    keys = list(dict.fromkeys(k for r in rs for k in (r.get("terms") or {})))
    many = len(rs) > 1
    head = "<tr><th>term</th>" + "".join(f"<th>κ = {fmt_k(r['kappa'])}</th>" if r.get("kappa") is not None
                                         else "<th>value</th>" for r in rs) + "</tr>" if many else ""
    rows = []
    for k in keys:
        vals = [_num((r.get("terms") or {}).get(k)) for r in rs]
        if many and len(set(vals)) == 1:  # the same for every kappa: once, across the row
            rows.append(f'<tr><th>{escape(k)}</th><td colspan={len(vals)} class="same">{vals[0]}</td></tr>')
        else:
            rows.append(f"<tr><th>{escape(k)}</th>" + "".join(f"<td>{x}</td>" for x in vals) + "</tr>")
    body = "".join(rows)
    assumptions = list(dict.fromkeys(a for r in rs for a in r.get("assumptions", [])))
    vac = next((vacuous_reason(r) for r in rs if r.get("kind") == "certified" and is_vacuous(r)), None)
    return ('<details><summary>terms</summary><div class="pop">'
            f'<table class="terms">{head}{body}</table>'
            + (f'<p class="vacwhy"><b>vacuous</b>: {escape(vac)}</p>' if vac else "")
            + "<b>assumptions</b><ul>" + "".join(f"<li>{escape(a)}</li>" for a in assumptions) + "</ul>"
            + f"<p>delta = {rs[0].get('delta', float('nan')):g}</p></div></details>")


def _grid_best(v: ModelView) -> str:
    best = [b for b in v.run.doc.get("best_over_grid") or [] if b.get("model") == v.name]
    if not best:
        return ""
    rows = "".join(
        f'<tr class="certified"><td>{_swatch(b["name"])}</td><td>{k_text(b)}</td><td>{style.kappa_text(b.get("kappa"))}</td>'
        f'<td>{_num(b.get("value"))}</td><td>{_num(b.get("delta"))}</td><td>{_num(b.get("delta_per_partition"))}</td></tr>'
        for b in sorted(best, key=lambda b: style.sort_key(b["name"])))
    note = escape(best[0].get("note", ""))
    return ('<h4>Best certified value over the K grid (delta split across the grid)</h4>'
            '<table class="results"><thead><tr><th>result</th><th>K</th><th>kappa</th><th>value</th>'
            f"<th>delta (total)</th><th>delta per partition</th></tr></thead><tbody>{rows}</tbody></table>"
            f'<p class="hint">{note}</p>')


def _provenance(run: Run, several: bool) -> str:
    rec = run.records
    doc = run.doc
    title = f"Provenance: {escape(run.label)}" if several else "Provenance"
    out = [f'<section class="prov"><h2>{title}</h2>',
           _kv({"folder": os.path.abspath(run.folder), "schema": doc.get("schema"),
                "genbound version": doc.get("genbound_version"), "delta": doc.get("delta"), "loss": doc.get("loss"),
                "wall time of the bounds pipeline (s)": rec.get("wall_s")})]
    data = rec.get("data") or {}
    if data:
        split = data.get("split") or {}
        out.append("<h3>Data</h3>" + _kv({"dataset": data.get("dataset"), "config file": data.get("config_file"),
                                          **{f"split {k}": val for k, val in split.items()}}))
        for part in ("train", "heldout"):
            d = data.get(part)
            if isinstance(d, dict):
                out.append(f"<details><summary>{part} source</summary>{_kv(d)}</details>")
    parts = rec.get("partitions") or {}
    if parts:
        keys = list(dict.fromkeys(k for p in parts.values() for k in p))
        out.append("<h3>Partitions</h3><table class=\"kv wide\"><tr><th></th>"
                   + "".join(f"<th>K = {escape(str(K))}</th>" for K in parts) + "</tr>"
                   + "".join(f"<tr><th>{escape(k)}</th>" + "".join(f"<td>{_cell(p.get(k))}</td>" for p in parts.values())
                             + "</tr>" for k in keys) + "</table>")
    models = [m for m in rec.get("models") or [] if isinstance(m, dict)]
    if models:
        out.append("<h3>Models</h3>" + _models_table(models))
        for m in models:
            out.append(f"<details><summary>full record of {escape(str(m.get('name')))}</summary>"
                       + _kv(m, skip=("name", "train_source", "heldout_source", "training"))
                       + (f"<b>training</b>{_kv(m['training'])}" if isinstance(m.get("training"), dict) else "")
                       + "".join(f"<b>{src.replace('_', ' ')}</b>{_kv(m[src])}"
                                 for src in ("train_source", "heldout_source") if isinstance(m.get(src), dict))
                       + "</details>")
    stab = rec.get("stability") or {}
    if stab:
        out.append("<h3>Stability evidence</h3>" + _stability_table(stab))
        for name, ev in stab.items():
            out.append(f"<details><summary>full evidence record of {escape(name)}</summary>{_kv(ev)}</details>")
    out.append("<h3>Timings</h3>" + _timings(rec))
    versions = run.versions or rec.get("versions")
    if versions:
        out.append("<h3>Versions</h3>" + _kv(versions))
    out.append("<h3>Files</h3><table class=\"kv\"><tr><th>file</th><th>bytes</th><th>sha256</th></tr>"
               + "".join(f"<tr><td>{escape(f['name'])}</td><td>{_num(f['bytes']) if f['bytes'] is not None else 'missing'}"
                         f"</td><td><code>{escape(f['sha256'] or '')}</code></td></tr>" for f in run.files)
               + "</table>")
    if run.samples_models:
        out.append(f"<p>samples.npz holds per-sample statistics for {len(run.samples_models)} (model, K) sets: "
                   + ", ".join(f"<code>{escape(t)}</code>" for t in run.samples_models)
                   + "; <code>genbound bounds samples.npz</code> recomputes every bound from them.</p>")
    extra = {k: v for k, v in rec.items() if k not in ("models", "stability", "partitions", "wall_s", "versions", "data")}
    if extra or doc.get("notes"):
        out.append("<h3>Notes</h3>" + _kv({**extra, **({"notes": doc["notes"]} if doc.get("notes") else {})}))
    if run.config_text:
        out.append(f"<h3>config.toml</h3><details><summary>show</summary><pre>{escape(run.config_text)}</pre></details>")
    out.append("</section>")
    return "".join(out)


def _cell(v: Any) -> str:
    """A record's value as written (floats to 6 significant digits, containers as compact JSON)."""
    if isinstance(v, (dict, list)):
        return f"<code>{escape(json.dumps(v, default=str))}</code>"
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.6g}"
    return _num(v)


def _stability_table(stab: dict[str, Any]) -> str:
    cols = ("method", "sound", "norm", "steps", "restarts", "seed", "n", "kappas")
    rows = []
    for name, ev in stab.items():
        pre = ev.get("prescreen") if isinstance(ev.get("prescreen"), dict) else {}
        evals = ev.get("model_evals") if isinstance(ev.get("model_evals"), dict) else {}
        pres = (f"{escape(str(pre.get('status')))}; proven stable per kappa: "
                f"{escape(json.dumps(pre.get('certified_per_kappa')))}" if pre else "–")
        rows.append(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{_cell(ev.get(c))}</td>" for c in cols)
                    + f"<td>{_num(evals.get('total'))}</td><td>{pres}</td></tr>")
    return ('<table class="kv wide"><tr><th>model</th>' + "".join(f"<th>{c}</th>" for c in cols)
            + "<th>model evaluations</th><th>sound pre-screen</th></tr>" + "".join(rows) + "</table>")


def _models_table(models: list[dict[str, Any]]) -> str:
    cols = (("factory", lambda m: m.get("factory")), ("kwargs", lambda m: m.get("kwargs")),
            ("weights fingerprint", lambda m: m.get("fingerprint")),
            ("random labels", lambda m: m.get("random_label_fraction")))
    tcols = ("epochs", "optimizer", "lr", "weight_decay", "batch_size", "seed", "final_epoch_train_accuracy", "wall_s")
    head = ("<tr><th>model</th>" + "".join(f"<th>{c}</th>" for c, _ in cols)
            + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in tcols) + "</tr>")
    rows = []
    for m in models:
        tr = m.get("training") if isinstance(m.get("training"), dict) else {}
        rows.append(f"<tr><th>{escape(str(m.get('name')))}</th>" + "".join(f"<td>{_cell(f(m))}</td>" for _, f in cols)
                    + "".join(f"<td>{_cell(tr.get(c))}</td>" for c in tcols) + "</tr>")
    return f'<table class="kv wide">{head}{"".join(rows)}</table>'


def _timings(rec: dict[str, Any]) -> str:
    """Wall-clock seconds: the bounds pipeline, and per model training, stability and its pre-screen."""
    out = [f"<p>bounds pipeline (collect, partition, stability, bounds): {_num(rec.get('wall_s'), 3)} s</p>"]
    stab = rec.get("stability") or {}
    names = list(dict.fromkeys([m.get("name") for m in rec.get("models") or [] if isinstance(m, dict)] + list(stab)))
    rows = []
    for name in names:
        m = next((m for m in rec.get("models") or [] if isinstance(m, dict) and m.get("name") == name), {})
        tr = m.get("training") if isinstance(m.get("training"), dict) else {}
        ev = stab.get(name) if isinstance(stab.get(name), dict) else {}
        pre = ev.get("prescreen") if isinstance(ev.get("prescreen"), dict) else {}
        rows.append(f"<tr><th>{escape(str(name))}</th><td>{_num(tr.get('wall_s'), 3)}</td>"
                    f"<td>{_num(ev.get('wall_s'), 3)}</td><td>{_num(pre.get('wall_s'), 3)}</td></tr>")
    if rows:
        out.append('<table class="kv wide"><tr><th>model</th><th>training (s)</th><th>stability (s)</th>'
                   "<th>of which sound pre-screen (s)</th></tr>" + "".join(rows) + "</table>")
    return "".join(out)


# ---------------------------------------------------------------- the page

def render_page(runs: list[Run]) -> str:
    """The HTML text of the page for ``runs`` (one or several)."""
    views = model_views(runs)
    several = len(runs) > 1
    title = ", ".join(r.label for r in runs)
    deltas = sorted({r.doc.get("delta") for r in runs if r.doc.get("delta") is not None})
    intro = (f"{len(views)} model{'s' if len(views) != 1 else ''} from {len(runs)} run{'s' if several else ''} "
             f"({escape(title)}); delta = {', '.join(f'{d:g}' for d in deltas)}; 0-1 (top-1) error.")
    nav = ('<nav><a href="#summary">summary</a> · <a href="#overview">all models</a> · '
           + " · ".join(f'<a href="#{v.key}">{escape(v.label)}</a>' for v in views)
           + ' · <a href="#provenance">provenance</a></nav>')
    body = [f"<header><h1>genbound report</h1><p>{intro}</p>{nav}</header>", _summary(views, several),
            _across(views), '<section id="models"><h2>Per model</h2>'
            "<p>Each result against kappa (the seed paper's figure: bound vs kappa, held-out error as a line, the "
            "unstable fraction beside it), then the full table: one row per result and K, one column per kappa.</p>"
            + "".join(_model_section(v) for v in views) + "</section>",
            '<div id="provenance">' + "".join(_provenance(r, several) for r in runs) + "</div>",
            f'<footer>written by genbound {escape(str(runs[0].doc.get("genbound_version", "")))} from '
            + ", ".join(f"<code>{escape(os.path.abspath(r.folder))}</code>" for r in runs) + "</footer>"]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>genbound report: {escape(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + f"<script>{_JS}</script></body></html>\n")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;max-width:1280px;margin:0 auto;padding:0 18px 40px}
h1{margin:18px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:34px}h3{margin-top:26px}
nav{font-size:13px}a{color:#0b57a4}code{font:12px ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f3f4f6;font-weight:600;text-align:left}td.v{text-align:right;font-variant-numeric:tabular-nums}
table.summary{font-size:12.5px}table.summary td{font-variant-numeric:tabular-nums}table.summary th,table.summary td{padding:3px 5px}
table.summary th{text-align:center}table.summary td.verdict{min-width:90px}th.cert{background:#e3eefb}th.diag{background:#f4efe6}td.cert{background:#f7fbff}td.diag{background:#fcfaf5}
.kind{font-size:11px;padding:1px 5px;border-radius:3px;white-space:nowrap}
.kind.certified{background:#0b57a4;color:#fff}.kind.diagnostic{border:1px dashed #8a6d3b;color:#6b5220;background:#fff8e6}
tr.certified td:first-child{border-left:4px solid #0b57a4}
tr.diagnostic td{background:repeating-linear-gradient(135deg,#fff,#fff 6px,#faf6ec 6px,#faf6ec 8px)}
tr.diagnostic td:first-child{border-left:4px dashed #b08a3e}
td.miss,.v.miss{color:#b00020;font-weight:600}.mk{margin-left:2px}
td.vac,.v.vac{color:#8a8a8a}
.ok{color:#176b2c;font-weight:600}.bad{color:#b00020;font-weight:600}.na{color:#777}
.vacwhy{color:#555;font-size:12px;max-width:420px}.pick{color:#666;font-size:11px;max-width:420px;margin-top:3px}
.nm,.nw{white-space:nowrap}.scroll{overflow-x:auto}table.summary td:first-child{white-space:nowrap}.sw{display:inline-block;width:11px;height:11px;background:var(--c);border:1px solid var(--c);margin-right:5px;vertical-align:-1px}
.sw.diag{background:#fff;border:2px dashed var(--c);width:8px;height:8px}
.legend,.hint{color:#555;font-size:12.5px;max-width:1000px}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}figure{margin:4px 0;position:relative;border:1px solid #eee}
figure svg{display:block;max-width:100%;height:auto}figcaption{font-size:12px;color:#555;padding:2px 6px}
button.save{position:absolute;top:3px;right:3px;font-size:10px;padding:1px 5px;opacity:.55;cursor:pointer}
button.save:hover{opacity:1}
[hidden]{display:none!important}
section.model{border-top:1px solid #e5e5e5;margin-top:26px}ul.facts{margin:4px 0 6px;padding-left:20px;color:#333}
table.results th[data-sort]{cursor:pointer;user-select:none}table.results th[data-sort]:hover{background:#e6e9ee}
th.asc:after{content:" ▲";font-size:9px}th.desc:after{content:" ▼";font-size:9px}
tr.stat td{color:#444;background:#f7f7f7;font-style:italic;text-align:right}tr.stat td:first-child{text-align:left}
details summary{cursor:pointer;color:#0b57a4;font-size:12px}td.det{position:relative}td.det details[open] .pop{position:absolute;right:0;top:24px;width:max-content;max-width:min(900px,86vw);z-index:10;background:#fff;border:1px solid #aab;box-shadow:0 4px 14px rgba(0,0,0,.18);padding:6px 10px}td.det details[open] .pop ul{max-width:640px}
table.terms td,table.terms th{font-size:12px;padding:1px 5px}details ul{margin:2px 0;padding-left:18px;font-size:12px;text-align:left}
details p{text-align:left;font-size:12px;margin:3px 0}td.same{text-align:center;color:#444}
table.kv th{width:260px}table.kv.wide th{width:auto}table.kv code{word-break:break-word}
.kf{display:inline-block;margin:4px 0;font-size:13px}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
footer{margin-top:30px;color:#777;font-size:12px}
"""

_JS = """
(function(){
function val(td){if(!td){return null;}var v=td.getAttribute('data-v');
 if(v===null){var t=td.textContent.trim();return t===''?null:t;}return v==='Infinity'?Infinity:parseFloat(v);}
function cmp(x,y){if(x===null||y===null){return x===y?0:(x===null?1:-1);}
 if(typeof x==='number'&&typeof y==='number'){return x-y;}return String(x).localeCompare(String(y));}
document.querySelectorAll('table.sortable th[data-sort]').forEach(function(th){
 th.addEventListener('click',function(){var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;
  var asc=!th.classList.contains('asc');table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);
   if(x===null||y===null){return cmp(x,y);}return asc?cmp(x,y):cmp(y,x);});
  rows.forEach(function(r){body.appendChild(r);});});});
document.querySelectorAll('select[data-target]').forEach(function(sel){
 sel.addEventListener('change',function(){var k=sel.value,t=sel.getAttribute('data-target');
  document.querySelectorAll('[data-filter="'+t+'"] [data-k]').forEach(function(el){el.hidden=!!k&&el.getAttribute('data-k')!==k;});});});
document.querySelectorAll('button.save').forEach(function(b){
 b.addEventListener('click',function(){var svg=b.parentNode.querySelector('svg');
  var text=new XMLSerializer().serializeToString(svg);var a=document.createElement('a');
  a.href=URL.createObjectURL(new Blob([text],{type:'image/svg+xml'}));
  a.download=(b.parentNode.getAttribute('data-name')||'figure')+'.svg';document.body.appendChild(a);a.click();a.remove();});});
})();
"""
