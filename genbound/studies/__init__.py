"""Studies and self-checks built from the library's layers (data -> ... -> bounds -> report).

Studies run through the pipeline (:func:`genbound.pipeline.evaluate`), never through each other.

- :mod:`genbound.studies.certified_lowdim`: ``genbound study certified-lowdim``.
- :mod:`genbound.studies.robust_overfitting`: ``genbound study robust-overfitting``: PGD-AT (piecewise),
  AWP, PGD-AT with the WCI-guarded schedule; per-epoch records, WCI-gap correlations, the verdict,
  learning dynamics (:mod:`genbound.studies.dynamics`), plots (:mod:`genbound.studies.plots`).
"""
