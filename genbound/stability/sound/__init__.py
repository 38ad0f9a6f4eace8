"""Sound stability certificates, written in plain torch: IBP, CROWN and an exact LP search.

What is proven
--------------
For a sample ``x`` with predicted class ``c`` (argmax of the network at ``x``) and a radius
``kappa`` in pre-normalization [0, 1] pixel units, a ``True`` flag means: for every ``x'`` in the
ball ``{x' : ||x' - x|| <= kappa}`` (norm ``linf`` or ``l2``) intersected with the input domain
(default ``[0, 1]^d``), every margin ``z_c(x') - z_j(x')``, ``j != c``, is ``> 0``: the predicted
class cannot change. Proofs are about the network in exact real arithmetic with the model's
weights (float32 weights are exactly representable in float64). The bound arithmetic runs in
float64, and a sample is certified only if every margin lower bound exceeds
``tol = rtol * (1 + max_j |z_j(x)|)`` (``rtol = 1e-9`` by default), far above float64 rounding
for networks of this kind (~1e-13 relative). The radius is inflated by a relative ``1e-9`` so
that float64 rounding of cell boundaries in :mod:`genbound.partition.grid` is covered too.
A sample whose float64 prediction differs from the model's own forward pass is never certified.

Methods (``method=``)
---------------------
``ibp``    interval bound propagation; the last affine layers are folded into the margin
           (``C W`` before concretizing), as is standard.
``crown``  the combined certificate: CROWN back-substitution of the margins ``z_c - z_j`` to the
           input (ReLU upper relaxation = chord; lower = adaptive slope 1 if ``u >= -l`` else 0),
           with intermediate pre-activation bounds computed by CROWN itself layer by layer for
           the neurons that IBP leaves unstable, intersected with IBP (and the tightened bounds
           are propagated forward by IBP). Final lower bound per margin = max(IBP, CROWN), so it
           certifies at least what ``ibp`` certifies. Concretization: ``linf`` over the box
           ``[max(0, x - k), min(1, x + k)]``; ``l2`` as ``max(A x - k ||A||_2, box bound)``.
``exact``  for tiny inputs (``d <= 8``), ``linf`` only: samples not certified by ``crown`` are
           decided by enumerating the linear regions (ReLU activation patterns) of the network
           inside the ball with LPs (scipy HiGHS), branching neuron by neuron. Each region's
           margin minimum is bounded from below by a *safe dual bound* (valid for any dual vector,
           so LP inaccuracy cannot produce a false proof); a region whose LP minimizer flips the
           prediction in the real forward pass is a counterexample. Sound; complete up to the
           tolerance: a sample is ``stable``, ``unstable`` (counterexample found) or
           ``undecided`` (margin minimum in (0, tol], LP failure, or ``max_lps`` exhausted).

Supported modules (the contract for model code)
-----------------------------------------------
The model is walked structurally; a module is supported when its *exact type* is one of:

* ``nn.Sequential`` (nested; subclasses only if they do not override ``forward``);
* ``nn.Linear``, ``nn.Conv2d`` (any stride/padding/dilation/groups/padding_mode),
  ``nn.Conv1d``;
* ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in **eval mode** with running statistics (folded into
  an affine map);
* ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.Flatten`` (``start_dim=1``), ``nn.Identity``,
  ``nn.Dropout`` in eval mode;
* ``nn.ReLU``;
* input normalization: any module with ``genbound_normalize = True`` and tensor attributes
  ``mean`` and ``std`` of shape ``[C]`` (or scalars) whose forward is ``(x - mean) / std`` along
  dim 1 (channels); :class:`Normalize` here is one;
* residual blocks: any module with ``genbound_residual = True`` and attributes ``block``,
  ``shortcut`` (a module or ``None`` = identity) and ``post`` (a module or ``None``) whose forward
  is ``post(block(x) + shortcut(x))``; :class:`Residual` here is one;
* any other module exposing ``genbound_layers`` (an ``nn.Sequential`` or list of modules) whose
  forward equals applying those layers in order (e.g. a ResNet class).

Every structural claim is checked numerically: the verifier's own forward pass must reproduce
``model(x)`` on the data, or the model is ``unverified``. Anything else (``nn.Tanh``,
``nn.MaxPool2d``, custom modules, functional calls hidden in a custom ``forward``) makes the
whole model **unverified**: all flags False, ``evidence["status"] == "unverified"`` and the
reason recorded -- never ``stable``. A model with BatchNorm or Dropout in **training mode** is
refused with :class:`~genbound.errors.UserInputError` (call ``model.eval()``): its output is
not a fixed function of the input.

Flags are monotone in kappa: samples are tried at ascending kappas and dropped at the first kappa
that is not proven (early stop), so ``stable[i, j]`` implies ``stable[i, :j]``.

Package layout (the internal API, each a module of its own)
-----------------------------------------------------------
``operators``  every supported leaf module, defined once: float64 map, ``|M| r``, transpose, float32 enclosure
``graph``      :func:`compile_network` -> :class:`Net` (affine / relu / add nodes, float64 forward)
``propagate``  :class:`InputSet`, :func:`ibp_pass`, :func:`backward` (CROWN), :func:`margin_lower_bounds`
``exact``      :class:`ExactSearch`: linear regions + LPs with safe dual bounds
``float32``    interval bounds in float32 with every rounding error enclosed
``prescreen``  :class:`PGDPrescreen`: pairs no attack can flip, skipped by the PGD engine
``certify``    :class:`SoundEngine` (the stability engine of ``ibp`` / ``crown`` / ``exact``) and
               :func:`sound_stability` (the same on an in-memory tensor)
"""

from genbound.models.architectures import Residual  # the residual protocol
from genbound.models.normalize import Normalize  # the normalization protocol
from genbound.stability.sound.certify import (
    DEFAULT_RTOL,
    EXACT_MAX_DIM,
    RADIUS_INFLATION,
    SOUND_METHODS,
    SoundEngine,
    SoundStabilityResult,
    certify_batch,
    sound_stability,
    structure_mismatch,
)
from genbound.stability.sound.exact import ExactSearch
from genbound.stability.sound.graph import Net, Node, UnsupportedModelError, compile_network
from genbound.stability.sound.operators import Affine, normalize
from genbound.stability.sound.propagate import InputSet, backward, ibp_pass, margin_lower_bounds, margin_matrix

__all__ = [
    "DEFAULT_RTOL", "EXACT_MAX_DIM", "RADIUS_INFLATION", "SOUND_METHODS",
    "Affine", "ExactSearch", "InputSet", "Net", "Node", "Normalize", "Residual", "SoundEngine",
    "SoundStabilityResult", "UnsupportedModelError",
    "backward", "certify_batch", "compile_network", "ibp_pass", "margin_lower_bounds", "margin_matrix",
    "normalize", "sound_stability", "structure_mismatch",
]
