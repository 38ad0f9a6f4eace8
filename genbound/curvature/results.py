"""Result objects of the trace estimators (plain data; JSON-ready through ``to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LayerTrace:
    """Estimate of ``Tr H_k`` for one parameter tensor ``W_k``.

    ``se`` is the standard error of ``trace`` over the estimator's own randomness, conditional on
    the examples (0 for exact estimators). ``numel`` is the number of entries of ``W_k``;
    ``n_products`` the Hessian-vector products spent on it (stochastic estimators that count them).
    """

    name: str
    group: str
    numel: int
    trace: float
    se: float
    n_products: int | None = None


@dataclass
class TraceResult:
    """Per-layer traces of the Hessian of the mean cross-entropy on fixed examples.

    ``total`` is ``sum_k Tr H_k`` over the selected tensors (the trace of the block-diagonal part
    of the Hessian restricted to them) and ``total_se`` its standard error.
    ``info`` records how it was computed (estimator, probes, bn_mode, number of examples, seed...).
    """

    layers: list[LayerTrace]
    total: float
    total_se: float
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> LayerTrace:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def traces(self) -> dict[str, float]:
        """``{name: Tr H_k}``."""
        return {lt.name: lt.trace for lt in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(lt) for lt in self.layers],
            "total": self.total,
            "total_se": self.total_se,
            "info": dict(self.info),
        }

    def table(self) -> str:
        """A small text table, one line per tensor."""
        width = max([len("layer")] + [len(lt.name) for lt in self.layers])
        label = "Tr C_k" if self.info.get("quantity") == "trace_c" else "Tr H_k"
        lines = [f"{'layer':<{width}}  {'numel':>9}  {label:>12}  {'s.e.':>10}"]
        for lt in self.layers:
            lines.append(f"{lt.name:<{width}}  {lt.numel:>9d}  {lt.trace:>12.5g}  {lt.se:>10.3g}")
        lines.append(f"{'total':<{width}}  {'':>9}  {self.total:>12.5g}  {self.total_se:>10.3g}")
        return "\n".join(lines)


