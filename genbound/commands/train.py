"""``genbound train``: train a reference model on a named dataset and save its weights.

    genbound train --data mnist5k --model small_cnn --epochs 3 --out runs/cnn.safetensors
    genbound train --data digits --model mlp --model-arg hidden=[128] --random-labels 0.5 --out mem.pt

Trains on the ``train`` part of the seeded stratified split (``--heldout-fraction``,
``--split-seed``), reports train and held-out error, and writes the weights (safetensors or a
``torch.save`` state dict, by extension) plus ``<out>.json`` with everything needed to rebuild the
model: factory, keyword arguments, normalization, split and training record. The model takes
[0, 1] pixels: the dataset's normalization is a ``Normalize`` layer inside it, so load it with
``load_model(factory, weights, normalization=...)`` as recorded in the JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import os

from genbound.commands._args import integer, real, split_fraction
from genbound.errors import UserInputError
from genbound.fileio import check_output_file, write_text

NAME = "train"
HELP = "train a reference model (mlp, small_cnn, small_resnet) on a named dataset and save its weights"


def _kv(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE a Python literal (``32``, ``[128, 64]``, ``True``) or a bare word."""
    k, sep, v = text.partition("=")
    if not sep or not k.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return k, ast.literal_eval(v)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if not v or v.lstrip()[:1] in "[({'\"0123456789+-.":  # meant as a literal, but malformed
            raise argparse.ArgumentTypeError(f"{text!r}: {v!r} is not a valid Python literal "
                                             "(e.g. width=32, hidden=[128,64], batchnorm=True)") from None
        return k, v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset name (digits, mnist5k, ...), ImageFolder dir or .npz")
    parser.add_argument("--model", default="small_cnn", choices=["mlp", "small_cnn", "small_resnet"])
    parser.add_argument("--model-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                        help="extra factory argument, e.g. width=32 or batchnorm=True (repeatable)")
    parser.add_argument("--out", required=True, help="weights file to write (.safetensors or .pt)")
    parser.add_argument("--epochs", type=integer(low=1), default=5)
    parser.add_argument("--lr", type=real(low=0, low_open=True), default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--weight-decay", type=real(low=0), default=0.0)
    parser.add_argument("--batch-size", type=integer(low=1), default=128)
    parser.add_argument("--seed", type=integer(), default=0, help="seed of weight init and data order")
    parser.add_argument("--random-labels", type=real(low=0, high=1), default=0.0, metavar="FRACTION",
                        help="train on labels randomized on this fraction of the training set (memorization)")
    parser.add_argument("--heldout-fraction", type=split_fraction, default=0.2)
    parser.add_argument("--split-seed", type=integer(), default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if not (args.out.endswith(".safetensors") or args.out.endswith(".pt") or args.out.endswith(".pth")):
        raise UserInputError(f"--out must end in .safetensors, .pt or .pth; got {args.out!r}")
    check_output_file(args.out, "--out", missing_folder="allow")  # before training: a wrong path must not cost it
    check_output_file(args.out + ".json", "--out", missing_folder="allow")

    from genbound.collect import collect
    from genbound.data import load_dataset, randomize_labels, split_source
    from genbound.models import load_model, save_weights, train_classifier, with_normalization
    source = load_dataset(args.data)
    train, held, split = split_source(source, args.heldout_fraction, seed=args.split_seed)
    kwargs = dict(args.model_arg)
    if args.model == "mlp":
        kwargs.setdefault("input_shape", list(source.shape))
    else:
        if len(source.shape) != 3:
            raise UserInputError(f"{args.model} needs images (C, H, W); {args.data} has shape {source.shape}; use --model mlp")
        kwargs.setdefault("in_channels", source.shape[0])
    kwargs.setdefault("num_classes", source.num_classes)
    kwargs.setdefault("seed", args.seed)
    net = load_model(args.model, device="cpu", **kwargs)  # its errors name the factory and the arguments
    model = train_classifier(with_normalization(net, source.normalization), train, epochs=args.epochs, lr=args.lr,
                             optimizer=args.optimizer, weight_decay=args.weight_decay, batch_size=args.batch_size,
                             seed=args.seed, random_label_fraction=args.random_labels, device=args.device,
                             progress_bar=not args.no_progress)
    fit_on = randomize_labels(train, args.random_labels, seed=args.seed)[0] if args.random_labels > 0 else train
    train_err = collect(model, fit_on, device=args.device, progress_bar=False).error
    held_err = collect(model, held, device=args.device, progress_bar=False).error
    check_output_file(args.out, "--out", missing_folder="create")
    save_weights(net, args.out)  # the bare network; normalization is recorded and re-applied at load
    record = {"factory": args.model, "kwargs": kwargs, "weights": os.path.basename(args.out),
              "normalization": source.normalization.as_dict(), "data": source.describe(), "split": split.record(),
              "training": model.genbound_training, "train_error": train_err, "heldout_error": held_err}
    write_text(args.out + ".json", json.dumps(record, indent=2, default=str))
    print(f"{args.model} on {args.data}: train error {train_err:.4f}"
          f"{' (on the randomized labels)' if args.random_labels > 0 else ''}, held-out error {held_err:.4f}; "
          f"wrote {args.out} and {args.out}.json")
    return 0
