"""genbound: generalization bounds from robustness and stability, and curvature diagnostics."""

__version__ = "0.1.0"
