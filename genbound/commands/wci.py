"""``genbound wci``: Weight-Curvature Index of a trained classifier (spec wci.md §1).

    genbound wci --model package.module:function --weights model.pt --data digits --eps 0.1 --json wci.json

Data come from :func:`genbound.data.load_dataset` (by default the ``train`` part of the same seeded
split that ``genbound train``, ``demo`` and ``evaluate`` use), models from
:func:`genbound.models.load_model` (factory string, keyword arguments, safe weights loading), with
the dataset's normalization in front so the attack runs in [0, 1] pixel units.
"""

from __future__ import annotations

import argparse
import sys

NAME = "wci"
HELP = "Weight-Curvature Index: per-layer ||W||_F and Hessian traces on frozen adversarial examples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="model factory: mlp, small_cnn, small_resnet, package.module:function, torchvision:NAME, timm:NAME")
    parser.add_argument("--model-kwargs", default="{}", help="keyword arguments of the factory, as JSON (default {})")
    parser.add_argument("--weights", help="state_dict file (torch.save, loaded with weights_only=True; or .safetensors)")
    parser.add_argument("--data", required=True, help="dataset: digits, mnist5k, an ImageFolder directory or a .npz")
    parser.add_argument("--split", choices=("train", "all"), default="train",
                        help="train: the train part of the seeded split (default); all: every sample")
    parser.add_argument("--heldout-fraction", type=float, default=0.2, help="held-out fraction of that split (default 0.2)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="the model takes [0,1] pixels itself: do not put the dataset's mean/std in front")
    parser.add_argument("--eps", type=float, default=8 / 255, help="PGD radius (default 8/255; MNIST-style data: 0.1-0.3)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf", help="PGD norm (default linf)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    parser.add_argument("--step-size", type=float, default=None, help="PGD step (default eps/4)")
    parser.add_argument("--subset", type=int, default=2048, help="size of the fixed random training subset (default 2048)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of attack and curvature passes (default 256)")
    parser.add_argument("--estimator", choices=("hutchpp", "hutchinson", "fisher", "exact"), default="hutchpp",
                        help="trace estimator (default hutchpp: Hutch++ per layer, any network)")
    parser.add_argument("--rel-se", default=None, metavar="R",
                        help="stop each layer once its standard error is at most R times its trace (default 0.05; "
                             "hutchpp and hutchinson)")
    parser.add_argument("--probes", default=None, metavar="N",
                        help="a fixed number of probes per layer instead of the --rel-se rule (hutchpp: after the sketch)")
    parser.add_argument("--sketch", default="16", metavar="S", help="Hutch++ sketch columns per layer (default 16)")
    parser.add_argument("--max-products", default="2000", metavar="M",
                        help="Hessian-vector products per layer at most under --rel-se (default 2000)")
    parser.add_argument("--probe-mode", choices=("layer", "joint"), default="layer", help="Hutchinson probing (default layer)")
    parser.add_argument("--bn-mode", choices=("eval", "train"), default="eval", help="BatchNorm statistics (default eval)")
    parser.add_argument("--include-biases", action="store_true", help="also report bias terms (not part of WCI)")
    parser.add_argument("--include-norm", action="store_true", help="also report norm-layer affine terms (not part of WCI)")
    parser.add_argument("--delta", type=float, default=0.05, help="confidence parameter of the readout (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of subset, PGD start and probes (default 0)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write the result as JSON to OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from genbound.curvature import wci
    import json

    from genbound.data import load_dataset
    from genbound.errors import UserInputError
    from genbound.models import load_model

    for flag, value in (("--subset", args.subset), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserInputError(f"{flag} must be a positive integer, got {value}")
    if args.probes is not None and args.rel_se is not None:
        raise UserInputError("--probes (a fixed number) and --rel-se (a stopping rule) exclude each other; give one")
    rel_se = None if args.probes is not None else (0.05 if args.rel_se is None else _fraction("--rel-se", args.rel_se))
    probes = 32 if args.probes is None else _integer("--probes", args.probes, 2)
    sketch = _integer("--sketch", args.sketch, 0)
    max_products = _integer("--max-products", args.max_products, 2)
    if args.eps < 0:
        raise UserInputError(f"--eps must be non-negative, got {args.eps}")
    if not 0 < args.delta < 1:
        raise UserInputError(f"--delta must be in (0, 1), got {args.delta}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserInputError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:0 ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked but CUDA is not available; use --device cpu")

    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"--model-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise UserInputError("--model-kwargs must be a JSON object, e.g. '{\"hidden\": [64]}'")
    source = load_dataset(args.data, split=args.split, heldout_fraction=args.heldout_fraction, split_seed=args.split_seed)
    x, y = source.tensors()
    model = load_model(args.model, args.weights, normalization=None if args.no_normalize else source.normalization,
                       **kwargs)
    model = model.to(device=dev, dtype=getattr(torch, args.dtype)).eval()
    result = wci(
        model,
        (x, y),
        eps=args.eps,
        norm=args.norm,
        steps=args.steps,
        step_size=args.step_size,
        subset_size=args.subset,
        seed=args.seed,
        bn_mode=args.bn_mode,
        estimator=args.estimator,
        n_probes=probes,
        rel_se=rel_se,
        sketch=sketch,
        max_products=max_products,
        probe_mode=args.probe_mode,
        batch_size=args.batch_size,
        include_biases=args.include_biases,
        include_norm=args.include_norm,
        delta=args.delta,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result.protocol["data"] = {**source.describe(), "dataset": args.data, "split": args.split}
    result.protocol["model"] = args.model
    result.protocol["weights"] = args.weights
    print(result.table())
    if args.json_out:
        try:
            result.to_json(args.json_out)
        except OSError as exc:
            raise UserInputError(f"--json: cannot write {args.json_out!r} ({exc.strerror})") from None
        print(f"wrote {args.json_out}")
    return 0


def _fraction(flag: str, text: str) -> float:
    """A number strictly between 0 and 1 (``nan``, ``inf``, signs and words refused)."""
    import math

    from genbound.errors import UserInputError

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value < 1:
        raise UserInputError(f"{flag} must be a number between 0 and 1 (e.g. 0.05), got {text!r}")
    return value


def _integer(flag: str, text: str, minimum: int) -> int:
    """A whole number >= ``minimum``."""
    from genbound.errors import UserInputError

    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserInputError(f"{flag} must be a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise UserInputError(f"{flag} must be a whole number >= {minimum}, got {text!r}")
    return value
