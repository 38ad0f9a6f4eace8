"""Report layer: plots (matplotlib, headless) and a self-contained HTML page of a run."""

from genbound.report.html import write_html
from genbound.report.plots import write_plots

__all__ = ["write_plots", "write_html"]
