"""Studies: end-to-end experiments that train, track and report (``genbound study ...``).

- :mod:`genbound.studies.robust_overfitting`: PGD-AT (piecewise), AWP, PGD-AT with the WCI-guarded
  schedule; per-epoch records, WCI-gap correlations, the robust-overfitting verdict, learning
  dynamics (:mod:`genbound.studies.dynamics`), plots (:mod:`genbound.studies.plots`).
"""
