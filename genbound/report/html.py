"""A self-contained HTML page of a run: the table, the plots (embedded), the records."""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Any

from genbound.fileio import write_text


def write_html(ev: Any, folder: str, paths: dict[str, str]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>genbound report</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}pre{font-size:12px;overflow-x:auto}"
             "img{max-width:100%}</style>",
             "<h1>genbound report</h1>",
             "<p><b>certified</b> = a high-probability upper bound on the test error (a theorem under its listed "
             "assumptions); <b>diagnostic</b> = an estimate from the literature, not a bound. "
             "A <code>!</code> marks a value below the held-out error.</p>",
             f"<pre>{html.escape(ev.table())}</pre>"]
    for key in ("plot_bounds", "plot_stability", "plot_estimates"):
        if key in paths and os.path.exists(paths[key]):
            with open(paths[key], "rb") as fh:
                data = base64.b64encode(fh.read()).decode()
            parts.append(f"<img alt='{key}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Run record</h2><pre>" + html.escape(json.dumps(ev.records, indent=2, default=str)) + "</pre>")
    path = os.path.join(folder, "report.html")
    write_text(path, "\n".join(parts))
    return path
