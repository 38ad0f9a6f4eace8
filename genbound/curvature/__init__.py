"""Curvature of the adversarial loss: per-layer Hessian traces, eigenvalues, gradient noise, WCI.

Every estimator works on **frozen** examples (e.g. adversarial examples from :func:`pgd`) and on
the mean cross-entropy over them (spec ``wci.md``). Public API:

- :func:`hutchpp`, :func:`hutchinson`, :func:`fisher`, :func:`exact` -> :class:`TraceResult`
  (per-layer ``Tr H_k``)
- :func:`top_eigenvalues` -> :class:`EigenResult`
- :func:`gradient_noise_trace` -> :class:`TraceResult` (``Tr C``)
- :func:`pgd` (frozen adversarial examples)
- :func:`wci` -> :class:`WCIResult`
"""

from genbound.curvature._common import ParamSpec, wci_parameters
from genbound.curvature.adversarial import pgd
from genbound.curvature.eigen import EigenResult, HessianOperator, top_eigenvalues
from genbound.curvature.exact import exact, exact_blocks
from genbound.curvature.fisher import check_piecewise_linear, fisher
from genbound.curvature.hutchinson import hutchinson
from genbound.curvature.hutchpp import hutchpp
from genbound.curvature.noise import gradient_noise_trace
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.curvature.wci import WCILayer, WCIResult, readout, wci

__all__ = [
    "EigenResult",
    "HessianOperator",
    "LayerTrace",
    "ParamSpec",
    "TraceResult",
    "WCILayer",
    "WCIResult",
    "check_piecewise_linear",
    "exact",
    "exact_blocks",
    "fisher",
    "gradient_noise_trace",
    "hutchinson",
    "hutchpp",
    "pgd",
    "readout",
    "top_eigenvalues",
    "wci",
    "wci_parameters",
]
