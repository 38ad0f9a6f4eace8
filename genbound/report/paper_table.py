"""The paper-style table of ``genbound reproduce``: one row per (model, partition seed, K, kappa),
train and test error, then every result with its kind, the certified ones beside the estimates.

Built from finished runs' ``result.json`` documents only (no torch). Written as Markdown, CSV and
JSON. Labels are part of the numbers:

- each column names its kind, ``certified`` (a theorem at ``delta``) or ``diagnostic`` (an
  estimate, not a bound); a column whose kind differs between rows says ``mixed`` and each of its
  cells says which;
- ``†`` marks every number computed with the held-out (test) labels: the test error itself, the
  held-out bounds (``holdout_cp``, ``theorem_h``) and the estimates that read held-out labels in
  cells (``than_*``, ``stability_a``, ``stability_c``);
- with several partition seeds a ``median`` row per (model, K, kappa) follows (spec §5: the median
  of certified values over R random partitions holds at 1 - 2 delta, and says so).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from typing import Any

from genbound.fileio import write_text

SCHEMA = "genbound.reproduce/1"
CERTIFIED_ORDER = ("holdout_cp", "theorem_h", "xu_mannor", "kawaguchi", "theorem_n")
DIAGNOSTIC_ORDER = ("than_rob", "than_localrob", "than_localsen", "than_localavg", "stability_b", "stability_a",
                    "stability_c")
#: results whose value is computed with held-out (test) labels
USES_TEST_LABELS = frozenset({"holdout_cp", "theorem_h", "than_rob", "than_localrob", "than_localsen", "than_localavg",
                              "stability_a", "stability_c"})
DAGGER = "†"


def _fmt(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4f}"


def build_table(runs: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Rows and columns from ``[(partition seed, result.json document), ...]``."""
    kinds: dict[str, set[str]] = defaultdict(set)
    rows: dict[tuple, dict[str, Any]] = {}
    for seed, doc in runs:
        train_err = {m["name"]: m.get("train_error") for m in doc.get("run", {}).get("models", [])}
        results = doc["results"]
        kappas = sorted({r["kappa"] for r in results if r["kappa"] is not None}) or [None]
        for r in results:
            kinds[r["name"]].add(r["kind"])
            for kap in ([r["kappa"]] if r["kappa"] is not None else kappas):
                key = (r["model"], seed, r["K"], kap)
                row = rows.setdefault(key, {"model": r["model"], "seed": seed, "K": r["K"], "kappa": kap,
                                            "train_error": train_err.get(r["model"]),
                                            "test_error": r["heldout_error"], "values": {}, "kinds": {}})
                row["values"][r["name"]] = r["value"]
                row["kinds"][r["name"]] = r["kind"]
    names = [n for n in CERTIFIED_ORDER + DIAGNOSTIC_ORDER if n in kinds]
    names += sorted(n for n in kinds if n not in names)  # a result added later still shows
    # the certified beside the estimates: certified columns first, then the diagnostics
    names.sort(key=lambda n: 0 if kinds[n] == {"certified"} else 1 if len(kinds[n]) > 1 else 2)
    columns = [{"name": n, "kind": next(iter(kinds[n])) if len(kinds[n]) == 1 else "mixed",
                "uses_test_labels": n in USES_TEST_LABELS} for n in names]
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[2] or 0, -1 if k[3] is None else k[3], k[1]))]
    seeds = sorted({s for s, _ in runs})
    if len(seeds) > 1:
        ordered = _with_medians(ordered, names)
    return {"columns": columns, "rows": ordered, "seeds": seeds}


def _median(values: list[float]) -> float | None:
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def _with_medians(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["K"], r["kappa"])].append(r)
    for (model, K, kappa), rs in groups.items():
        out.extend(rs)
        out.append({"model": model, "seed": "median", "K": K, "kappa": kappa,
                    "train_error": rs[0]["train_error"], "test_error": _median([r["test_error"] for r in rs]),
                    "values": {n: _median([r["values"].get(n) for r in rs]) for n in names},
                    "kinds": {n: rs[0]["kinds"].get(n) for n in names}})
    return out


def _header(col: dict[str, Any]) -> str:
    return f"{col['name']} [{col['kind']}]" + (DAGGER if col["uses_test_labels"] else "")


def _cell(row: dict[str, Any], col: dict[str, Any]) -> str:
    v = _fmt(row["values"].get(col["name"]))
    if col["kind"] == "mixed" and row["kinds"].get(col["name"]):
        v += f" ({row['kinds'][col['name']][0]})"
    return v


def _kappa(k: float | None) -> str:
    if k is None:
        return "—"
    return f"{k:.6g} ({k * 255:.3g}/255)"


def to_markdown(table: dict[str, Any], protocol: dict[str, Any], delta: float) -> str:
    cols = table["columns"]
    head = ["model", "seed", "K", "kappa", "train error", f"test error{DAGGER}"] + [_header(c) for c in cols]
    lines = [f"# {protocol['title']}", "", f"Reference: {protocol['reference']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["model"], str(r["seed"]), str(r["K"]), _kappa(r["kappa"]), _fmt(r["train_error"]),
                 _fmt(r["test_error"])] + [_cell(r, c) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"- `[certified]`: an upper bound on the true error holding with probability >= 1 - {delta:g} "
                  "(a vacuous value, >= 1, is printed as it is); `[diagnostic]`: an estimate from the literature, "
                  "**not a bound**; `[mixed]`: the kind differs between rows, each cell says which (c/d).",
              f"- {DAGGER} computed with the held-out (test) labels: the test error, the held-out bounds and the "
              "estimates that read held-out labels in cells. Comparing such an estimate with the test error is "
              "circular; `holdout_cp` is the honest test-set bound.",
              "- kappa: stability radius in [0, 1] pixel units (l_inf) of the preprocessed image; results that do "
              "not depend on kappa repeat on every kappa row."]
    if len(table["seeds"]) > 1:
        lines.append("- `median`: the median over the partition seeds of each value; for certified results it "
                     f"holds at 1 - {2 * delta:g} (spec §5), never the mean.")
    lines += ["", "## Protocol choices", "", "| setting | value | status | why |", "|---|---|---|---|"]
    for c in protocol["choices"]:
        lines.append(f"| {c['setting']} | `{json.dumps(c['value'])}` | {c['status']} | {c['note']} |")
    lines.append(f"| models | {', '.join(protocol['models_used'])} | "
                 f"{'user' if protocol['models_used'] != protocol['models_suggested'] else 'protocol'} | "
                 f"{protocol['models_note']} |")
    lines.append(f"| seeds | {protocol['seeds_used']} | {'user' if protocol['seeds_used'] != protocol['seeds'] else 'protocol'}"
                 f" | {protocol['seeds_note']} |")
    for n in protocol["notes"]:
        lines += ["", n]
    return "\n".join(lines) + "\n"


def to_csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = table["columns"]
    w.writerow(["model", "seed", "K", "kappa", "train_error", f"test_error{DAGGER}"] + [_header(c) for c in cols])
    for r in table["rows"]:
        w.writerow([r["model"], r["seed"], r["K"], "" if r["kappa"] is None else repr(r["kappa"]),
                    "" if r["train_error"] is None else repr(r["train_error"]),
                    "" if r["test_error"] is None else repr(r["test_error"])]
                   + ["" if r["values"].get(c["name"]) is None else repr(r["values"][c["name"]]) for c in cols])
    return buf.getvalue()


def write_table(out_dir: str, table: dict[str, Any], protocol: dict[str, Any], delta: float,
                runs: list[str]) -> dict[str, str]:
    """``table.md``, ``table.csv`` and ``table.json`` in ``out_dir``; returns the paths."""
    paths = {ext: os.path.join(out_dir, f"table.{ext}") for ext in ("md", "csv", "json")}
    write_text(paths["md"], to_markdown(table, protocol, delta))
    write_text(paths["csv"], to_csv(table))
    doc = {"schema": SCHEMA, "protocol": protocol, "delta": delta, "columns": table["columns"],
           "rows": table["rows"], "seeds": table["seeds"], "runs": runs,
           "legend": {"certified": f"upper bound holding with probability >= 1 - {delta:g}",
                      "diagnostic": "estimate from the literature, not a bound",
                      "uses_test_labels": "computed with the held-out (test) labels"}}
    write_text(paths["json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return paths
