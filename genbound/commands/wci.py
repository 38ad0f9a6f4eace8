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

from genbound.commands._args import delta, integer, real, split_fraction

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
    parser.add_argument("--heldout-fraction", type=split_fraction, default=0.2, help="held-out fraction of that split (default 0.2)")
    parser.add_argument("--split-seed", type=integer(), default=0, help="seed of that split (default 0)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="the model takes [0,1] pixels itself: do not put the dataset's mean/std in front")
    parser.add_argument("--eps", type=real(low=0), default=8 / 255, help="PGD radius (default 8/255; MNIST-style data: 0.1-0.3)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf", help="PGD norm (default linf)")
    parser.add_argument("--steps", type=integer(), default=10, help="PGD steps (default 10)")
    parser.add_argument("--step-size", type=real(low=0, low_open=True), default=None, help="PGD step (default 2.5 eps / steps: eps/4 at 10 steps)")
    parser.add_argument("--subset", type=integer(low=1), default=2048, help="size of the fixed random training subset (default 2048)")
    parser.add_argument("--batch-size", type=integer(low=1), default=256, help="batch size of attack and curvature passes (default 256)")
    parser.add_argument("--estimator", choices=("hutchpp", "hutchinson", "fisher", "exact"), default="hutchpp",
                        help="trace estimator (default hutchpp: Hutch++ per layer, any network)")
    parser.add_argument("--rel-se", type=real(low=0, high=1, low_open=True, high_open=True), default=None, metavar="R",
                        help="stop each layer once its standard error is at most R times its trace (default 0.05; "
                             "hutchpp and hutchinson)")
    parser.add_argument("--probes", type=integer(low=2), default=None, metavar="N",
                        help="a fixed number of probes per layer instead of the --rel-se rule (hutchpp: after the sketch)")
    parser.add_argument("--sketch", type=integer(low=0), default=16, metavar="S",
                        help="Hutch++ sketch columns per layer (default 16)")
    parser.add_argument("--max-products", type=integer(low=2), default=2000, metavar="M",
                        help="Hessian-vector products per layer at most under --rel-se (default 2000)")
    parser.add_argument("--probe-mode", choices=("layer", "joint"), default="layer", help="Hutchinson probing (default layer)")
    parser.add_argument("--bn-mode", choices=("eval", "train"), default="eval", help="BatchNorm statistics (default eval)")
    parser.add_argument("--include-biases", action="store_true", help="also report bias terms (not part of WCI)")
    parser.add_argument("--include-norm", action="store_true", help="also report norm-layer affine terms (not part of WCI)")
    parser.add_argument("--delta", type=delta, default=0.05, help="confidence parameter of the readout (default 0.05)")
    parser.add_argument("--seed", type=integer(), default=0, help="seed of subset, PGD start and probes (default 0)")
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
    from genbound.fileio import check_output_file
    from genbound.models import load_model
    from genbound.models.validate import check_model
    from genbound.torch_utils import resolve_device

    dev = resolve_device(args.device)
    if args.probes is not None and args.rel_se is not None:
        raise UserInputError("--probes (a fixed number) and --rel-se (a stopping rule) exclude each other; give one")
    rel_se = None if args.probes is not None else (0.05 if args.rel_se is None else args.rel_se)
    probes = 32 if args.probes is None else args.probes
    sketch, max_products = args.sketch, args.max_products
    if args.json_out is not None:
        check_output_file(args.json_out, "--json")  # before the attack and the traces, not after

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
    check_model(model, x[:2].to(device=dev, dtype=getattr(torch, args.dtype)), source.num_classes,
                what=f"model {args.model!r}")
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
    if args.json_out is not None:
        result.to_json(args.json_out)
        print(f"wrote {args.json_out}")
    return 0

