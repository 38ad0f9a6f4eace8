"""The bounds layer: pure numpy/scipy functions of per-sample arrays (``spec/bounds.md``).

No torch import here or below. Typical use::

    from genbound.bounds import SampleStats, compute_bounds
    stats = SampleStats(train_cell=..., train_loss=..., train_stable=..., kappas=...,
                        heldout_cell=..., heldout_loss=..., K=1000)
    report = compute_bounds(stats, delta=0.05)
    print(report.table()); report.to_json("result.json")
"""

from genbound.bounds.concentration import clopper_pearson_upper, u_g, u_kaw, u_m, u_xm
from genbound.bounds.grids import best_over_grid, median_over_partitions, split_delta
from genbound.bounds.io import load_stats_npz, save_stats_npz
from genbound.bounds.result import SCHEMA, BoundReport, BoundResult
from genbound.bounds.stats import SOUND_METHODS, SampleStats
from genbound.bounds.suite import CERTIFIED, DIAGNOSTIC, RESULT_NAMES, compute_bounds

__all__ = [
    "SampleStats", "compute_bounds", "BoundReport", "BoundResult", "SCHEMA", "SOUND_METHODS",
    "CERTIFIED", "DIAGNOSTIC", "RESULT_NAMES", "load_stats_npz", "save_stats_npz",
    "best_over_grid", "median_over_partitions", "split_delta",
    "clopper_pearson_upper", "u_xm", "u_kaw", "u_g", "u_m",
]
