"""Studies and self-checks built from the library's layers (data -> ... -> bounds -> report).

- :mod:`genbound.studies.kappa_fine`: every bound on kappa-fine label-pure grids rebuilt per kappa
  (delta split over the kappa grid, spec §5).
- :mod:`genbound.studies.certified_lowdim`: ``genbound study certified-lowdim``.
- :mod:`genbound.studies.robust_overfitting`: ``genbound study robust-overfitting``: PGD-AT (piecewise),
  AWP, PGD-AT with the WCI-guarded schedule; per-epoch records, WCI-gap correlations, the verdict,
  learning dynamics (:mod:`genbound.studies.dynamics`), plots (:mod:`genbound.studies.plots`).
"""
