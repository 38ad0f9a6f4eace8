"""Report layer: the self-contained HTML page of one or several finished runs (SVG figures inline).

The page is drawn from a run folder's files only (``result.json``, ``config.toml``,
``versions.json``, ``samples.npz``), so a saved run can be re-rendered at any time
(``genbound report RUN_DIR``). No torch here.
"""

from genbound.report.html import render_page, write_report
from genbound.report.run import Run, load_run

__all__ = ["write_report", "render_page", "load_run", "Run"]
