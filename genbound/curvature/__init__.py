"""Curvature of the adversarial loss: per-layer Hessian traces, eigenvalues, gradient noise, WCI.

Every estimator works on **frozen** examples (e.g. adversarial examples from
:func:`genbound.curvature.adversarial.pgd`) and on the mean cross-entropy over them; see
``spec/wci.md``.
"""
