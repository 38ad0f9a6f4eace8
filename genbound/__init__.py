"""genbound: generalization bounds from robustness and stability, and curvature diagnostics.

``from genbound import evaluate, Config`` runs the whole pipeline (imports torch on first use);
``genbound.bounds`` is the pure-numpy bounds layer.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Config", "evaluate", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``genbound bounds`` and ``import genbound.bounds`` never pay for torch.
    if name == "evaluate":
        from genbound.pipeline import evaluate

        return evaluate
    if name == "Config":
        from genbound.config import Config

        return Config
    raise AttributeError(f"module 'genbound' has no attribute {name!r}")
