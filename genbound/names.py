"""The names a run can ask for, in one place: the configuration validates against these and the
layers dispatch on them (no torch here, so the config and the bounds-only CLI can read it)."""

from __future__ import annotations

#: Stability engines (``genbound.stability.registry``): empirical first, then sound verifiers.
#: ``pgd+autoattack`` runs both attacks and calls a sample unstable if either flips it.
EMPIRICAL_METHODS = ("pgd", "noise", "autoattack", "pgd+autoattack")
SOUND_METHODS = ("ibp", "crown", "exact")
STABILITY_METHODS = EMPIRICAL_METHODS + SOUND_METHODS

#: Norms of the kappa-balls (PGD, the verifier); the noise engine also draws Gaussian noise.
NORMS = ("linf", "l2")
NOISE_KINDS = NORMS + ("gaussian",)

#: The attacks of the ``autoattack`` engine, in AutoAttack's order (``pyautoattack``'s names).
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t")

#: Intermediate bounds of the CROWN verifier.
INTERMEDIATE_BOUNDS = ("crown", "ibp")

#: Partitions (``genbound.partition``): Voronoi kinds, kappa-fine label-pure grids, k-means clusters.
VORONOI_KINDS = ("uniform", "heldout", "projection")
PARTITION_KINDS = VORONOI_KINDS + ("grid", "kmeans")

#: What a k-means partition is fitted on: a split of the held-out data disjoint from the held-out
#: samples used for evaluation (independent of the training sample), or the training set itself
#: (then every partition result is a diagnostic). Backends: torch, or faiss when installed.
KMEANS_FITS = ("heldout-split", "train")
KMEANS_BACKENDS = ("torch", "faiss")
