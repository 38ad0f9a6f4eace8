"""Bad input never ends in a traceback or a silent wrong number.

Every case drives the real command line and checks the promise of the README: a user mistake ends
in exactly one line on stderr and exit code 2; a write the system refuses (disk full, file size
limit) ends in one line naming the path and exit code 74 (``genbound.errors.EXIT_OUTPUT``); never
a traceback, and never a file (nor a temporary file) left at the output target.

Harness: :func:`run_cli` runs ``python -m genbound ...`` in a subprocess (the package under test
first on ``PYTHONPATH``); ``in_process=True`` calls :func:`genbound.cli.main` instead, for the many
cheap cases of a command whose subprocess would mostly time its imports (the same code path:
``python -m genbound`` is ``sys.exit(main())``). :func:`assert_user_error` and
:func:`assert_output_error` check the outcome.

Sections, one per category of bad input (append new categories at the end, each with its cases):
  1. ``genbound bounds``: file contents (archive defects, sizes, dtypes, values, records)
  2. output targets of every command that writes (folder, below a file, disk full)
  3. ``evaluate`` configs (every key: types, ranges, unknown keys, paths, names, preprocessing,
     class lists, normalization), 4. model factories (evaluate and ``wci --model``),
  5. ``train``/``wci``/``check``/``study``/``reproduce`` flags, 6. inputs once accepted although wrong (non-monotone sound flags,
     contradictory duplicate kappas, labels outside the model's classes, NaN/inf weights and
     outputs), and data handed to ``--data``: these run ``genbound.cli.main`` in this process with
     pytest's capture (:func:`assert_refused`), plus a few real console runs.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from genbound import cli
from genbound.errors import EXIT_OUTPUT, OutputError, UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_PREFIX = ".genbound-tmp-"


# ----------------------------------------------------------------------------------------- harness


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONSTARTUP", None)
    return env


def _limit_file_size(nbytes: int):
    """preexec_fn: a full disk, simulated: writes past ``nbytes`` fail with EFBIG (SIGXFSZ ignored)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def run_cli(args: list[str], *, cwd: str | None = None, file_size_limit: int | None = None, timeout: float = 300,
            in_process: bool = False) -> tuple[int, str, str]:
    """Run ``genbound ARGS``; return (exit code, stdout, stderr).

    ``file_size_limit``: the largest file the command may write (RLIMIT_FSIZE), to simulate a full
    disk. ``in_process``: call ``genbound.cli.main`` here instead of a subprocess (not with a limit).
    """
    args = [str(a) for a in args]
    if in_process:
        assert file_size_limit is None and cwd is None
        from genbound.cli import main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(args)  # an exception escaping here is the traceback the user would see
        return rc, out.getvalue(), err.getvalue()
    p = subprocess.run([sys.executable, "-m", "genbound", *args], cwd=cwd or ROOT, env=_env(), capture_output=True,
                       text=True, timeout=timeout,
                       preexec_fn=_limit_file_size(file_size_limit) if file_size_limit is not None else None)
    return p.returncode, p.stdout, p.stderr


def _leftovers(folders) -> list[str]:
    found = []
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            found += [os.path.join(dirpath, f) for f in files if f.startswith(TMP_PREFIX)]
    return found


def _check_outcome(rc: int, out: str, err: str, code: int, contains: tuple[str, ...], absent: tuple,
                   tmp_folders: tuple) -> str:
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert rc == code, f"exit code {rc}, expected {code}: {line}"
    assert line.startswith("genbound") and ": error: " in line, line
    for text in contains:
        assert text in line, f"{text!r} not in: {line}"
    for path in absent:
        assert not os.path.exists(path), f"{path} was left behind: {line}"
    left = _leftovers(tmp_folders)
    assert not left, f"temporary files left behind: {left}"
    return line


def assert_user_error(args: list, *, contains: tuple[str, ...] = (), absent: tuple = (), tmp_folders: tuple = (),
                      code: int = 2, **kw) -> str:
    """Run ``genbound ARGS`` and check: exit ``code`` (2), one line on stderr containing each of
    ``contains``, no traceback, none of the ``absent`` paths exists, no temporary file under
    ``tmp_folders``. Returns the error line."""
    rc, out, err = run_cli(list(args), **kw)
    return _check_outcome(rc, out, err, code, contains, absent, tmp_folders)


def assert_output_error(args: list, target: str, **kw) -> str:
    """A write the system refused: exit 74, one line naming ``target``, no partial or temporary file."""
    folder = os.path.dirname(os.path.abspath(target))
    return assert_user_error(args, code=EXIT_OUTPUT, contains=(str(target),), absent=(target,),
                             tmp_folders=(folder,), **kw)


# ------------------------------------------------------------------- 1. `genbound bounds`: file contents

RNG = np.random.default_rng(11)
N, M = 200, 50
# flags monotone in kappa (stable at the larger kappa implies at the smaller), as a sound verifier
# gives them: a case that declares them sound fails for its own defect only
BASE = dict(train_cell=RNG.integers(0, 8, N), train_loss=(RNG.random(N) < 0.1).astype(np.uint8),
            train_stable=np.arange(2)[None, :] < RNG.integers(0, 3, N)[:, None], kappas=np.array([0.01, 0.02]),
            heldout_cell=RNG.integers(0, 8, M), heldout_loss=(RNG.random(M) < 0.1).astype(np.uint8), K=np.int64(8))


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asanyarray(a), allow_pickle=True)
    return b.getvalue()


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return b.getvalue()


def _members(**over) -> dict[str, bytes]:
    d = {**BASE, **over}
    return {f"{k}.npy": _npy(v) for k, v in d.items() if v is not None}


def arrays(**over) -> bytes:
    """The valid statistics with some arrays replaced (None: removed), as .npz bytes."""
    return _zip(_members(**over))


def member(name: str, data: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    """The valid statistics with one member's raw bytes replaced."""
    return _zip({**_members(), name: data}, compression)


def _header_of(a: np.ndarray, **edit: bytes) -> bytes:
    raw = _npy(a)
    for old, new in edit.items():
        raw = raw.replace(old.encode(), new)
    return raw


def _flip(data: bytes, after: bytes, offset: int, count: int) -> bytes:
    b = bytearray(data)
    i = b.find(after) + len(after) + offset
    for j in range(i, i + count):
        b[j] ^= 0x5A
    return bytes(b)


def _set_zip_field(data: bytes, local: int, central: int, value: int, width: int = 2, bit: bool = False) -> bytes:
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        i = b.find(sig) + off
        if bit:
            b[i] |= value
        else:
            b[i:i + width] = value.to_bytes(width, "little")
    return bytes(b)


def _deflated() -> bytes:
    return _zip(_members(), zipfile.ZIP_DEFLATED)


def _trailing() -> bytes:
    return member("train_cell.npy", _npy(BASE["train_cell"]) + b"\0" * 8)


def _big_header() -> bytes:
    raw = _npy(BASE["train_cell"])
    hlen = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + hlen].rstrip(b"\n") + b" " * 20000 + b"\n"
    return b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header + raw[10 + hlen:]


def _multi(**over) -> bytes:
    d = {"K.npy": _npy(np.int64(8)), "kappas.npy": _npy(BASE["kappas"])}
    for model in ("a", "b"):
        for k in ("train_cell", "train_loss", "train_stable"):
            d[f"{model}/{k}.npy"] = _npy(BASE[k])
    for k, v in over.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = _npy(v)
    return _zip(d)


STR = np.str_
# (id, file bytes or None for no file, extra CLI args, text the error must contain)
BOUNDS_FILE_CASES = [
    # the archive itself
    ("empty-file", b"", [], "not a readable .npz"),
    ("text-file", b"train_cell,train_loss\n1,0\n", [], "not a readable .npz"),
    ("single-npy", _npy(BASE["train_cell"]), [], "single .npy array"),
    ("truncated-zip-half", _deflated()[: len(_deflated()) // 2], [], "not a readable .npz"),
    ("truncated-zip-tail", _deflated()[:-30], [], "not a readable .npz"),
    ("empty-archive", _zip({}), [], "holds no arrays"),
    ("corrupt-deflate-zlib", _flip(_deflated(), b"train_cell.npy", 40, 40), [], "member 'train_cell.npy' cannot be read"),
    ("bad-crc", _flip(arrays(), b"train_cell.npy", 200, 1), [], "CRC"),
    ("unknown-compression", _set_zip_field(arrays(), 8, 10, 97), [], "compression method"),
    ("encrypted", _set_zip_field(arrays(), 6, 8, 1, bit=True), [], "encrypted"),
    ("member-not-npy", member("K.npy", b"8"), [], "not a numpy array"),
    ("member-text-file", member("notes.txt", b"hello"), [], "not a numpy array"),
    ("torch-checkpoint", _zip({"archive/data.pkl": b"\x80\x02}q\x00.", "archive/version": b"3\n"}), [],
     "not a numpy array"),
    ("duplicate-member", _zip({**_members(), "K": _npy(np.int64(9))}), [], "two arrays named 'K'"),
    ("absurd-shape-7TiB", member("train_cell.npy", _header_of(np.zeros(3, np.int64), **{"(3,)": b"(1000000000000,)"})),
     [], "7.3 TiB"),
    ("absurd-shape-deflated", member("train_cell.npy", _header_of(np.zeros(3, np.int64), **{"(3,)": b"(1000000000000,)"}),
                                     zipfile.ZIP_DEFLATED), [], "holds only"),
    ("absurd-2d-shape", member("train_stable.npy", _header_of(np.zeros((3, 2), bool), **{"(3, 2)": b"(4294967296, 4294967296)"})),
     [], "holds only"),
    ("shape-overflows-int64", member("train_cell.npy", _header_of(np.zeros(3, np.int64), **{"(3,)": b"(10**30,)"})),
     [], "cannot be read"),
    ("shape-beyond-int64", member("train_cell.npy", _header_of(np.zeros(3, np.int64),
                                                                **{"(3,)": b"(100000000000000000000,)"})), [], "holds only"),
    ("negative-dimension", member("train_cell.npy", _header_of(np.zeros(3, np.int64), **{"(3,)": b"(-3,)"})), [],
     "negative dimension"),
    ("truncated-member", member("train_cell.npy", _npy(BASE["train_cell"])[:-100]), [], "holds only"),
    ("trailing-bytes", _trailing(), [], "more bytes than its header declares"),
    ("header-wrong-keys", member("train_cell.npy", _header_of(BASE["train_cell"], descr=b"dxxxx")), [], "cannot be read"),
    ("header-garbage", member("train_cell.npy", _header_of(BASE["train_cell"], **{"'descr'": b"descr"})), [],
     "cannot be read"),
    ("header-too-large", member("train_cell.npy", _big_header()), [], "cannot be read"),
    ("npy-version-9", member("train_cell.npy", b"\x93NUMPY\x09\x00" + _npy(BASE["train_cell"])[8:]), [],
     "unsupported .npy format version"),
    ("pickled-object-array", arrays(kappas=np.array([0.01, 0.02], dtype=object)), [], "pickled"),
    ("pickled-object-field", arrays(train_cell=np.zeros(N, dtype=[("a", "i8"), ("b", "O")])), [], "pickled"),
    # arrays: dtypes, shapes, lengths, values
    ("missing-train_loss", arrays(train_loss=None), [], "missing array(s) train_loss"),
    ("missing-K", arrays(K=None), [], "needs K"),
    ("unknown-key", arrays(extra=np.zeros(2)), [], "unknown array 'extra'"),
    ("train_cell-float", arrays(train_cell=np.zeros(N)), [], "integer cell ids"),
    ("train_cell-nan", arrays(train_cell=np.full(N, np.nan)), [], "integer cell ids"),
    ("train_cell-text", arrays(train_cell=np.array(["a"] * N)), [], "integer cell ids"),
    ("train_cell-bool", arrays(train_cell=np.zeros(N, bool)), [], "integer cell ids"),
    ("train_cell-2d", arrays(train_cell=np.zeros((N, 1), np.int64)), [], "1-D array"),
    ("train_cell-scalar", arrays(train_cell=np.int64(3)), [], "1-D array"),
    ("train_cell-empty", arrays(train_cell=np.zeros(0, np.int64), train_loss=np.zeros(0, np.uint8),
                                train_stable=np.zeros((0, 2), bool)), [], "empty"),
    ("train_cell-record", arrays(train_cell=np.zeros(N, dtype=[("a", "i8")])), [], "integer cell ids"),
    ("train_loss-2x-units", arrays(train_loss=np.full(N, 2, np.uint8)), [], "0-1 losses"),
    ("train_loss-nan", arrays(train_loss=np.full(N, np.nan)), [], "0-1 losses"),
    ("train_loss-inf", arrays(train_loss=np.full(N, np.inf)), [], "0-1 losses"),
    ("train_loss-fraction", arrays(train_loss=np.full(N, 0.5)), [], "0-1 losses"),
    ("train_loss-negative", arrays(train_loss=np.full(N, -1, np.int8)), [], "0-1 losses"),
    ("train_loss-text", arrays(train_loss=np.array(["0"] * N)), [], "0-1 losses"),
    ("train_loss-complex", arrays(train_loss=np.zeros(N, complex)), [], "0-1 losses"),
    ("train_loss-length", arrays(train_loss=np.zeros(10, np.uint8)), [], "train_loss has 10 entries"),
    ("heldout_loss-length", arrays(heldout_loss=np.zeros(7, np.uint8)), [], "heldout_loss has 7 entries"),
    ("heldout_loss-alone", arrays(heldout_cell=None), [], "heldout_cell has 0"),
    ("heldout_cell-float", arrays(heldout_cell=np.zeros(M)), [], "integer cell ids"),
    ("heldout_loss-nan", arrays(heldout_loss=np.full(M, np.nan)), [], "0-1 losses"),
    ("train_stable-columns", arrays(train_stable=np.ones((N, 3), bool)), [], "3 columns but 2 kappas"),
    ("train_stable-rows", arrays(train_stable=np.ones((N - 1, 2), bool)), [], "must have shape"),
    ("train_stable-float", arrays(train_stable=np.ones((N, 2))), [], "boolean"),
    ("train_stable-nan", arrays(train_stable=np.full((N, 2), np.nan)), [], "boolean"),
    ("train_stable-two", arrays(train_stable=np.full((N, 2), 2, np.int64)), [], "boolean"),
    ("train_stable-3d", arrays(train_stable=np.ones((N, 2, 1), bool)), [], "must have shape"),
    ("train_stable-text", arrays(train_stable=np.full((N, 2), "True")), [], "boolean"),
    ("kappas-without-flags", arrays(train_stable=None), [], "without train_stable"),
    ("kappas-text", arrays(kappas=np.array(["a", "b"])), [], "kappas must be real numbers"),
    ("kappas-numeric-text", arrays(kappas=np.array(["0.01", "0.02"])), [], "kappas must be real numbers"),
    ("kappas-bool", arrays(kappas=np.array([True, True])), [], "kappas must be real numbers"),
    ("kappas-complex", arrays(kappas=np.array([0.01 + 1j, 0.02])), [], "kappas must be real numbers"),
    ("kappas-nan", arrays(kappas=np.array([np.nan, 0.02])), [], "finite and > 0"),
    ("kappas-inf", arrays(kappas=np.array([0.01, np.inf])), [], "finite and > 0"),
    ("kappas-zero", arrays(kappas=np.array([0.0, 0.02])), [], "finite and > 0"),
    ("kappas-negative", arrays(kappas=np.array([-0.01, 0.02])), [], "finite and > 0"),
    ("kappas-2d", arrays(kappas=np.array([[0.01, 0.02]])), [], "1-D array"),
    ("kappas-0-255-units-linf", arrays(kappas=np.array([2.0, 4.0]), norm=STR("linf")), [], "divide by 255"),
    # scalars: text where a number belongs, and the reverse
    ("K-text", arrays(K=STR("8")), [], "K must be an integer"),
    ("K-bool", arrays(K=np.bool_(True)), [], "K must be an integer"),
    ("K-fraction", arrays(K=np.float64(8.5)), [], "K must be an integer"),
    ("K-nan", arrays(K=np.float64(np.nan)), [], "K must be an integer"),
    ("K-inf", arrays(K=np.float64(np.inf)), [], "K must be an integer"),
    ("K-zero", arrays(K=np.int64(0)), [], "positive integer"),
    ("K-negative", arrays(K=np.int64(-8)), [], "positive integer"),
    ("K-array", arrays(K=np.array([8, 9])), [], "single value"),
    ("K-complex", arrays(K=np.complex128(8)), [], "K must be an integer"),
    ("K-date", arrays(K=np.datetime64("2020-01-01")), [], "K must be an integer"),
    ("K-too-small", arrays(K=np.int64(3)), [], "occupy 8 distinct cells"),
    ("log_K-text", arrays(K=None, log_K=STR("abc")), [], "log_K must be a real number"),
    ("log_K-numeric-text", arrays(K=None, log_K=STR("2.5")), [], "log_K must be a real number"),
    ("log_K-bool", arrays(K=None, log_K=np.bool_(True)), [], "log_K must be a real number"),
    ("log_K-record", arrays(K=None, log_K=np.zeros((), dtype=[("a", "f8"), ("b", "f8")])), [],
     "log_K must be a real number"),
    ("log_K-inf", arrays(K=None, log_K=np.float64(np.inf)), [], "finite and >= 0"),
    ("log_K-nan", arrays(K=None, log_K=np.float64(np.nan)), [], "finite and >= 0"),
    ("log_K-negative", arrays(K=None, log_K=np.float64(-1.0)), [], "finite and >= 0"),
    ("K-log_K-disagree", arrays(log_K=np.float64(5.0)), [], "disagree"),
    ("K-with-log_K-text", arrays(log_K=STR("abc")), [], "log_K must be a real number"),
    ("diameter-text", arrays(max_cell_diameter=STR("abc")), [], "max_cell_diameter must be a real number"),
    ("diameter-numeric-text", arrays(max_cell_diameter=STR("0.1")), [], "max_cell_diameter must be a real number"),
    ("diameter-complex", arrays(max_cell_diameter=np.complex128(1j)), [], "max_cell_diameter must be a real number"),
    ("diameter-bool", arrays(max_cell_diameter=np.bool_(True)), [], "max_cell_diameter must be a real number"),
    ("diameter-negative", arrays(max_cell_diameter=np.float64(-0.1)), [], "finite and >= 0"),
    ("diameter-inf", arrays(max_cell_diameter=np.float64(np.inf)), [], "finite and >= 0"),
    ("sound-text", arrays(stability_sound=STR("yes")), [], "stability_sound must be true/false"),
    ("sound-two", arrays(stability_sound=np.int64(2)), [], "stability_sound must be true/false"),
    ("sound-float", arrays(stability_sound=np.float64(1.0)), [], "stability_sound must be true/false"),
    ("sound-nan", arrays(stability_sound=np.float64(np.nan)), [], "stability_sound must be true/false"),
    ("label_pure-text", arrays(label_pure=STR("true")), [], "label_pure must be true/false"),
    ("uses_heldout-array", arrays(partition_uses_heldout=np.array([True, False])), [], "single value"),
    ("sound-on-pgd", arrays(stability_sound=np.bool_(True), stability_method=STR("pgd")), [],
     "only ['crown', 'exact', 'ibp'] are sound"),
    ("method-number", arrays(stability_method=np.int64(3)), [], "stability_method must be text"),
    ("model-number", arrays(model=np.float64(3.5)), [], "model must be text"),
    ("norm-number", arrays(norm=np.float64(2.0)), [], "norm must be text"),
    ("method-bad-utf8", arrays(stability_method=np.bytes_(b"\xff\xfe")), [], "not valid UTF-8"),
    ("partition_json-malformed", arrays(partition_json=STR("{kind: grid")), [], "partition_json is not valid JSON"),
    ("partition_json-list", arrays(partition_json=STR("[1, 2]")), [], "must be a JSON object"),
    ("partition_json-null", arrays(partition_json=STR("null")), [], "must be a JSON object"),
    ("partition_json-string", arrays(partition_json=STR('"grid"')), [], "must be a JSON object"),
    ("partition_json-nan", arrays(partition_json=STR('{"side": NaN}')), [], "NaN"),
    ("partition_json-infinity", arrays(partition_json=STR('{"side": -Infinity}')), [], "Infinity"),
    ("partition_json-deep", arrays(partition_json=STR('{"a": ' + "[" * 100000 + "]" * 100000 + "}")), [],
     "nested too deeply"),
    ("partition_json-deep-object", arrays(partition_json=STR('{"a": ' + "[" * 200 + "]" * 200 + "}")), [],
     "nested too deeply"),
    ("partition_json-number", arrays(partition_json=np.float64(3.0)), [], "partition_json must be text"),
    ("contradicts-certificate",
     arrays(train_cell=np.zeros(N, np.int64), train_loss=np.r_[np.zeros(N - 1), 1].astype(np.uint8),
            train_stable=np.ones((N, 2), bool), heldout_cell=np.zeros(5, np.int64), heldout_loss=np.zeros(5, np.uint8),
            stability_sound=np.bool_(True), stability_method=STR("ibp"), label_pure=np.bool_(True),
            max_cell_diameter=np.float64(0.01)), [], "contradict the certificate"),
    # a partial stability check (spec §8): train_checked, selection, selection_seed, delta_s
    ("train_checked-length", arrays(train_checked=np.ones(N - 1, bool)), [], "train_checked must have shape"),
    ("train_checked-2d", arrays(train_checked=np.ones((N, 1), bool)), [], "train_checked must have shape"),
    ("train_checked-float", arrays(train_checked=np.ones(N)), [], "train_checked must be boolean"),
    ("train_checked-two", arrays(train_checked=np.full(N, 2)), [], "train_checked must be boolean"),
    ("train_checked-text", arrays(train_checked=np.full(N, "yes")), [], "train_checked must be boolean"),
    ("unchecked-without-selection", arrays(train_checked=np.r_[np.zeros(1, bool), np.ones(N - 1, bool)],
                                           train_stable=np.zeros((N, 2), bool)), [], "say how the checked ones"),
    ("unchecked-but-stable", arrays(train_checked=np.zeros(N, bool), train_stable=np.ones((N, 2), bool),
                                    selection=STR("cells")), [], "train_stable is True for 200 samples"),
    ("unchecked-selection-all", arrays(train_checked=np.r_[np.zeros(1, bool), np.ones(N - 1, bool)],
                                       train_stable=np.zeros((N, 2), bool), selection=STR("all")), [],
     "selection 'all' but train_checked marks 1"),
    ("uniform-nothing-checked", arrays(train_checked=np.zeros(N, bool), train_stable=np.zeros((N, 2), bool),
                                       selection=STR("uniform")), [], "needs at least one checked sample"),
    ("selection-unknown", arrays(selection=STR("random")), [], "selection must be one of all, cells, uniform"),
    ("selection-number", arrays(selection=np.int64(1)), [], "selection must be text"),
    ("selection_seed-text", arrays(selection_seed=STR("7")), [], "selection_seed must be a real number"),
    ("selection_seed-fraction", arrays(selection_seed=np.float64(1.5)), [], "selection_seed must be an integer"),
    ("selection_seed-negative", arrays(selection_seed=np.int64(-1)), [], "selection_seed must be an integer >= 0"),
    ("delta_s-one", arrays(delta_s=np.float64(1.0)), [], "delta_s must be in (0, 1)"),
    ("delta_s-nan", arrays(delta_s=np.float64(np.nan)), [], "delta_s must be in (0, 1)"),
    ("delta_s-text", arrays(delta_s=STR("0.05")), [], "delta_s must be a real number"),
    # several models in one file
    ("multi-missing-loss", _multi(**{"b/train_loss.npy": None}), [], "model 'b': missing array(s) train_loss"),
    ("multi-K-text", _multi(**{"b/K.npy": STR("8")}), [], "b/K: K must be an integer"),
    ("multi-bad-stable", _multi(**{"a/train_stable.npy": np.ones((N, 2))}), [], "model 'a'"),
    # the command line
    ("delta-text", arrays(), ["--delta", "abc"], "delta must be a number"),
    ("delta-nan", arrays(), ["--delta", "nan"], "delta must be in (0, 1)"),
    ("delta-inf", arrays(), ["--delta", "inf"], "delta must be in (0, 1)"),
    ("delta-zero", arrays(), ["--delta", "0"], "delta must be in (0, 1)"),
    ("delta-one", arrays(), ["--delta", "1"], "delta must be in (0, 1)"),
    ("delta-underflow", arrays(), ["--delta", "1e-400"], "delta must be in (0, 1)"),
    ("missing-file", None, [], "not found"),
]

# the ones a subprocess checks too: process-level failures (allocation, decompression, recursion)
BOUNDS_SUBPROCESS = ("corrupt-deflate-zlib", "absurd-shape-7TiB", "absurd-2d-shape", "pickled-object-array",
                     "log_K-text", "kappas-text", "partition_json-list", "partition_json-deep")


def _bounds_case(tmp_path, data, extra):
    f = tmp_path / "stats.npz"
    if data is not None:
        f.write_bytes(data)
    out = tmp_path / "result.json"
    return [str(f), *extra], out


@pytest.mark.parametrize("label,data,extra,msg", BOUNDS_FILE_CASES, ids=[c[0] for c in BOUNDS_FILE_CASES])
def test_bounds_file_contents(tmp_path, label, data, extra, msg):
    argv, out = _bounds_case(tmp_path, data, extra)
    assert_user_error(["bounds", *argv, "--json", out], contains=(msg,), absent=(out,), tmp_folders=(tmp_path,),
                      in_process=True)


@pytest.mark.parametrize("label", BOUNDS_SUBPROCESS)
def test_bounds_file_contents_subprocess(tmp_path, label):
    (_, data, extra, msg), = [c for c in BOUNDS_FILE_CASES if c[0] == label]
    argv, out = _bounds_case(tmp_path, data, extra)
    assert_user_error(["bounds", *argv, "--json", out], contains=(msg,), absent=(out,), tmp_folders=(tmp_path,))


def test_bounds_valid_file_still_loads(tmp_path):
    """The base of every case above is valid: each case fails for its own defect only."""
    f = tmp_path / "stats.npz"
    f.write_bytes(arrays())
    rc, out, err = run_cli(["bounds", f, "--json", tmp_path / "r.json"], in_process=True)
    assert rc == 0 and err == "" and json.loads((tmp_path / "r.json").read_text())["results"]
    f.write_bytes(_multi())
    assert run_cli(["bounds", f, "--quiet"], in_process=True)[0] == 0


def test_bounds_well_compressed_large_array_loads(tmp_path):
    """A legitimately well-compressed array (2 million samples in a few tens of KiB) still loads."""
    n = 2_000_000
    f = tmp_path / "big.npz"
    np.savez_compressed(f, train_cell=np.zeros(n, np.int64), train_loss=np.zeros(n, np.uint8), K=np.int64(1))
    assert os.path.getsize(f) < n // 100
    rc, out, err = run_cli(["bounds", f, "--json", tmp_path / "r.json", "--quiet"], in_process=True)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["models"][0]["n"] == n


def test_bounds_text_fields_as_bytes_are_decoded(tmp_path):
    """Text saved as numpy bytes (``np.bytes_``, e.g. from h5py) is read as text, not as "b'ibp'"."""
    from genbound.bounds import load_stats_npz
    f = tmp_path / "s.npz"
    f.write_bytes(arrays(stability_method=np.bytes_(b"ibp"), stability_sound=np.bool_(True),
                         partition_json=np.bytes_(b'{"kind": "grid"}')))
    (s,) = load_stats_npz(f)
    assert s.stability_method == "ibp" and s.stability_sound and s.partition == {"kind": "grid"}


def test_read_npz_checks_declared_sizes_against_available_memory(tmp_path, monkeypatch):
    """Sizes declared within what the members hold but beyond the memory available: refused first."""
    from genbound import fileio
    f = tmp_path / "s.npz"
    f.write_bytes(arrays())
    assert set(fileio.read_npz(f)) >= {"train_cell", "K"}
    monkeypatch.setattr(fileio, "available_memory", lambda: 1000)
    with pytest.raises(UserInputError, match="more than the 1000 bytes of memory available"):
        fileio.read_npz(f)


def test_bounds_input_not_a_regular_file():
    assert_user_error(["bounds", "/dev/zero"], contains=("not a regular file",), in_process=True)


def test_bounds_input_is_a_folder(tmp_path):
    assert_user_error(["bounds", tmp_path], contains=("is a folder",), in_process=True)


def test_data_npz_goes_through_the_same_reader(tmp_path):
    """``--data x.npz`` (train, wci, evaluate) is read the same way: an absurd declared shape is refused unread."""
    from genbound.data import load_dataset
    f = tmp_path / "d.npz"
    f.write_bytes(_zip({"x.npy": _header_of(np.zeros((3, 1, 4, 4), np.float32), **{"(3, 1, 4, 4)": b"(10**6, 1, 4096, 4096)"}),
                        "y.npy": _npy(np.arange(3))}))
    with pytest.raises(UserInputError, match="cannot be read"):
        load_dataset(str(f))
    f.write_bytes(_zip({"x.npy": _header_of(np.zeros((3, 1, 4, 4), np.float32), **{"(3, 1, 4, 4)": b"(1000000, 1, 4096, 4096)"}),
                        "y.npy": _npy(np.arange(3))}))
    with pytest.raises(UserInputError, match="declares shape .* but holds only"):
        load_dataset(str(f))
    f.write_bytes(_zip({"x.npy": _npy(np.zeros((3, 1, 4, 4), object)), "y.npy": _npy(np.arange(3))}))
    with pytest.raises(UserInputError, match="pickled"):
        load_dataset(str(f))


def test_available_memory_is_known_here():
    from genbound.fileio import available_memory
    avail = available_memory()
    assert avail is None or avail > 0


# ------------------------------------------------------- 2. output targets of every command that writes


@pytest.fixture
def stats_file(tmp_path):
    f = tmp_path / "stats.npz"
    f.write_bytes(arrays())
    return f


@pytest.fixture
def a_file(tmp_path):
    """A regular file: any path below it can be neither created nor written, even by root."""
    f = tmp_path / "a_file"
    f.write_text("not a folder\n")
    return f


def test_bounds_json_target_is_a_folder(tmp_path, stats_file):
    (tmp_path / "out.json").mkdir()
    assert_user_error(["bounds", stats_file, "--json", tmp_path / "out.json"], contains=("is a folder",),
                      tmp_folders=(tmp_path,), in_process=True)
    assert os.listdir(tmp_path / "out.json") == []


@pytest.mark.parametrize("below", ["out.json", "sub/out.json"])
def test_bounds_json_below_a_regular_file(tmp_path, stats_file, a_file, below):
    target = os.path.join(a_file, below)
    assert_user_error(["bounds", stats_file, "--json", target], contains=(str(a_file), "is a file, not a folder"),
                      absent=(target,), tmp_folders=(tmp_path,), in_process=below == "out.json")


def test_bounds_json_in_a_missing_folder(tmp_path, stats_file):
    target = tmp_path / "nope" / "out.json"
    assert_user_error(["bounds", stats_file, "--json", target], contains=("does not exist",), absent=(target,),
                      in_process=True)


@pytest.mark.parametrize("target", ["", "some/folder/"])
def test_bounds_json_not_a_file_name(tmp_path, stats_file, target):
    assert_user_error(["bounds", stats_file, "--json", target], contains=("give a file name",), in_process=True)


def test_bounds_json_disk_full(tmp_path, stats_file):
    target = tmp_path / "out.json"
    line = assert_output_error(["bounds", stats_file, "--json", target, "--quiet"], str(target), file_size_limit=200)
    assert "File too large" in line


def test_bounds_json_disk_full_keeps_the_previous_result(tmp_path, stats_file):
    target = tmp_path / "out.json"
    target.write_text('{"previous": true}\n')
    rc, out, err = run_cli(["bounds", stats_file, "--json", target, "--quiet"], file_size_limit=200)
    assert rc == EXIT_OUTPUT and err.count("\n") == 1 and "Traceback" not in err, err
    assert target.read_text() == '{"previous": true}\n' and not _leftovers([tmp_path])


def test_bounds_json_to_a_device_or_through_a_link(tmp_path, stats_file):
    """/dev/null and FIFOs are written in place (never replaced by a regular file); a link stays a link."""
    import stat
    rc, out, err = run_cli(["bounds", stats_file, "--json", "/dev/null", "--quiet"], in_process=True)
    assert rc == 0 and err == "" and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "real.json").write_text("old")
    os.symlink("real.json", tmp_path / "link.json")
    rc, out, err = run_cli(["bounds", stats_file, "--json", tmp_path / "link.json", "--quiet"], in_process=True)
    assert rc == 0 and os.path.islink(tmp_path / "link.json")
    assert json.loads((tmp_path / "real.json").read_text())["schema"] == "genbound.result/1"
    assert not _leftovers([tmp_path])


@pytest.mark.parametrize("case", ["folder", "below-file"])
def test_check_json_target(tmp_path, a_file, case):
    """Refused before the check runs (no torch, no draws)."""
    target = tmp_path / "c.json" if case == "folder" else os.path.join(a_file, "c.json")
    if case == "folder":
        os.mkdir(target)
    assert_user_error(["check", "coverage", "--quick", "--json", target],
                      contains=("is a folder" if case == "folder" else "is a file, not a folder",),
                      tmp_folders=(tmp_path,), in_process=case == "folder")


@pytest.mark.parametrize("study", ["certified-lowdim", "robust-overfitting"])
def test_study_out_below_a_regular_file(tmp_path, a_file, study):
    target = os.path.join(a_file, "study")
    assert_user_error(["study", study, "--quick", "--out", target], contains=("is a file, not a folder",),
                      absent=(target,), in_process=study == "robust-overfitting")


def test_study_out_is_a_file(tmp_path, a_file):
    assert_user_error(["study", "certified-lowdim", "--quick", "--out", a_file], contains=("is not a folder",),
                      in_process=True)
    assert a_file.read_text() == "not a folder\n"


def test_demo_out_below_a_regular_file(tmp_path, a_file):
    target = os.path.join(a_file, "demo")
    assert_user_error(["demo", "--quick", "--no-progress", "--out", target], contains=("is a file, not a folder",))


@pytest.mark.parametrize("case", ["below-file", "folder"])
def test_train_out_refused_before_training(tmp_path, a_file, case):
    target = os.path.join(a_file, "w.safetensors") if case == "below-file" else str(tmp_path / "w.pt")
    if case == "folder":
        os.mkdir(target)
    assert_user_error(["train", "--data", "digits", "--model", "mlp", "--epochs", "50", "--no-progress", "--out", target],
                      contains=("is a file, not a folder" if case == "below-file" else "is a folder",),
                      tmp_folders=(tmp_path,), in_process=case == "folder")


def test_train_out_disk_full(tmp_path):
    target = tmp_path / "w.safetensors"
    assert_output_error(["train", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=[8]", "--epochs", "1",
                         "--no-progress", "--out", target], str(target), file_size_limit=512)
    assert not os.path.exists(str(target) + ".json")


def _tiny_weights(path) -> str:
    import torch
    from genbound.models import mlp
    torch.save(mlp(input_shape=[1, 8, 8], num_classes=10, hidden=[8], seed=0).state_dict(), path)
    return str(path)


def test_wci_json_target_is_a_folder(tmp_path):
    w = _tiny_weights(tmp_path / "w.pt")
    (tmp_path / "wci.json").mkdir()
    assert_user_error(["wci", "--model", "mlp", "--model-kwargs", '{"input_shape": [1, 8, 8], "hidden": [8]}',
                       "--weights", w, "--data", "digits", "--subset", "8", "--probes", "2", "--steps", "1",
                       "--quiet", "--json", tmp_path / "wci.json"], contains=("is a folder",), tmp_folders=(tmp_path,),
                      in_process=True)


def test_wci_json_disk_full(tmp_path):
    w = _tiny_weights(tmp_path / "w.pt")
    target = tmp_path / "wci.json"
    assert_output_error(["wci", "--model", "mlp", "--model-kwargs", '{"input_shape": [1, 8, 8], "hidden": [8]}',
                         "--weights", w, "--data", "digits", "--subset", "8", "--probes", "2", "--steps", "1",
                         "--quiet", "--json", target], str(target), file_size_limit=1000)


EVALUATE_CONFIG = """
[data]
train = "digits"
[[models]]
name = "m"
factory = "mlp"
weights = "{w}"
kwargs = {{ input_shape = [1, 8, 8], num_classes = 10, hidden = [8] }}
[bounds]
kappas = [0.05]
K = [5]
[stability]
steps = 1
"""


def test_evaluate_out_disk_full(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(EVALUATE_CONFIG.format(w=_tiny_weights(tmp_path / "w.pt")))
    out = tmp_path / "run"
    assert_user_error(["evaluate", cfg, "--out", out, "--no-progress"], code=EXIT_OUTPUT, contains=(str(out),),
                      absent=(out / "result.json", out / "samples.npz"), tmp_folders=(tmp_path,), file_size_limit=1000)


def test_evaluate_out_below_a_regular_file(tmp_path, a_file):
    cfg = tmp_path / "c.toml"
    cfg.write_text(EVALUATE_CONFIG.format(w=tmp_path / "w.pt"))
    assert_user_error(["evaluate", cfg, "--out", os.path.join(a_file, "run")], contains=("is a file, not a folder",),
                      in_process=True)


# the helper every writer uses, on failures a subprocess cannot provoke cheaply

def test_atomic_write_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
    from genbound.fileio import atomic_write
    target = tmp_path / "x.json"
    with pytest.raises(KeyError):
        with atomic_write(target) as fh:
            fh.write("partial")
            raise KeyError("the writer failed half-way")
    assert not target.exists() and not _leftovers([tmp_path])
    target.write_text("old")
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device \\(ENOSPC\\)"):
        with atomic_write(target) as fh:
            fh.write("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old" and not _leftovers([tmp_path])


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    """The temporary file is private (0600) while written; the result gets 0666 minus the umask."""
    from genbound import fileio
    old = os.umask(0o022)
    try:
        fileio._umask = None
        fileio.write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
        fileio._umask = None
    assert (tmp_path / "x.txt").read_text() == "hi"
    assert os.stat(tmp_path / "x.txt").st_mode & 0o777 == 0o644


def test_atomic_write_target_becomes_a_folder_meanwhile(tmp_path):
    from genbound.fileio import atomic_write
    target = tmp_path / "x.json"
    with pytest.raises(UserInputError, match="is a folder"):
        with atomic_write(target) as fh:
            fh.write("data")
            target.mkdir()
    assert not _leftovers([tmp_path])


def _writes(tree) -> list:
    """Calls that write a file: os.replace, mkstemp, open(.., 'w'/'a'/'x'), Path.write_*, np.savez*, torch.save,
    save_file, savefig."""
    import ast
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name == "open" and not owner:
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                found.append(node)
        elif (name, owner) in (("replace", "os"), ("save", "torch")) or name in (
                "mkstemp", "savez", "savez_compressed", "save_file", "savefig") or (
                name in ("write_text", "write_bytes") and isinstance(f, ast.Attribute)):
            found.append(node)
    return found


def test_every_writer_goes_through_the_helper():
    """No hand-rolled writes left in the package: files are written by genbound.fileio (atomic, one-line errors)."""
    import ast
    allowed = ("torch.save(obj, buf)",                      # torch_utils.save_torch: in memory, then fileio
               "np.savez(fh, **arrays)", "np.savez_compressed(fh, **out)",  # into fileio.atomic_write's file
               "fig.savefig(tmp, ",                         # into fileio.atomic_path's file
               'open(path, "r+b")')                         # the per-epoch log, truncated back on resume
    offenders = []
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "genbound")):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, ROOT)
            if not name.endswith(".py") or rel == os.path.join("genbound", "fileio.py"):
                continue
            with open(path) as fh:
                src = fh.read()
            for node in _writes(ast.parse(src)):
                code = ast.get_source_segment(src, node) or ""
                if not code.startswith(allowed):
                    offenders.append(f"{rel}:{node.lineno}: {code}")
    assert not offenders, "\n".join(offenders)


# ======================================================================================================
# 3-6. evaluate configs, model factories, train/wci flags, inputs once accepted although wrong
# ======================================================================================================
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CONFIG_BASE = textwrap.dedent("""\
    [data]
    train = "digits"
    heldout_fraction = 0.25
    split_seed = 0

    [[models]]
    name = "m"
    factory = "mlp"
    weights = "digits_mlp.safetensors"
    kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }

    [bounds]
    kappas = [0.01, 0.05]
    K = [10]
    delta = 0.05

    [stability]
    method = "noise"
    draws = 2
""")


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    shutil.copy(EXAMPLES / "digits_mlp.safetensors", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # factory modules written by the tests
    for name in USER_MODULES:  # each test imports its own copy
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield tmp_path
    for name in USER_MODULES:
        sys.modules.pop(name, None)


USER_MODULES = ("gbfactories", "broken_syntax", "raising_import")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_refused(argv: list[str], root: Path, *expected: str) -> str:
    """``genbound ARGV``, in this process, is a user error (:func:`assert_user_error`: exit 2, one
    line containing each of ``expected``, no traceback) that leaves no new file under ``root``."""
    before = _files(root)
    line = assert_user_error(argv, in_process=True, contains=expected)
    assert _files(root) - before == set(), _files(root) - before
    return line


def _config(root: Path, *edits: tuple[str, str], name: str = "c.toml") -> str:
    text = CONFIG_BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / name).write_text(text)
    return name


def _evaluate(cfg: str) -> list[str]:
    return ["evaluate", cfg, "--out", "out", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# Category 3: evaluate configs
# ---------------------------------------------------------------------------------------------
CONFIG_CASES = {
    "delta text": (('delta = 0.05', 'delta = "abc"'), "delta must be a number"),
    "delta nan": (('delta = 0.05', 'delta = nan'), "delta must be in (0, 1)"),
    "delta one": (('delta = 0.05', 'delta = 1.0'), "delta must be in (0, 1)"),
    "split seed text": (('split_seed = 0', 'split_seed = "x"'), "split_seed must be an integer"),
    "split seed fractional": (('split_seed = 0', 'split_seed = 1.5'), "split_seed must be an integer"),
    "split seed negative": (('split_seed = 0', 'split_seed = -1'), "split_seed must be an integer >= 0"),
    "partition seed text": (('delta = 0.05', 'delta = 0.05\npartition_seed = "s"'), "partition_seed must be an integer"),
    "stability seed text": (('draws = 2', 'draws = 2\nseed = "s"'), "stability_seed must be an integer"),
    "heldout fraction text": (('heldout_fraction = 0.25', 'heldout_fraction = "a"'), "heldout_fraction must be a number"),
    "heldout fraction one": (('heldout_fraction = 0.25', 'heldout_fraction = 1.0'), "strictly between 0 and 1"),
    "batch size text": (('draws = 2', 'draws = 2\n[run]\nbatch_size = "x"'), "batch_size must be an integer"),
    "batch size zero": (('draws = 2', 'draws = 2\n[run]\nbatch_size = 0'), "batch_size must be an integer >= 1"),
    "steps text": (('draws = 2', 'draws = 2\nsteps = "x"'), "pgd_steps must be an integer"),
    "steps fractional": (('draws = 2', 'draws = 2\nsteps = 2.5'), "pgd_steps must be an integer"),
    "restarts zero": (('draws = 2', 'draws = 2\nrestarts = 0'), "pgd_restarts must be an integer >= 1"),
    "draws bool": (('draws = 2', 'draws = true'), "noise_draws must be an integer"),
    "prescreen text": (('draws = 2', 'draws = 2\nprescreen = "yes"'), "prescreen"),
    "autoattack iters text": (('draws = 2', 'draws = 2\nautoattack_iters = "x"'), "autoattack_iters must be an integer"),
    "autoattack iters zero": (('draws = 2', 'draws = 2\nautoattack_iters = 0'),
                              "autoattack_iters must be an integer >= 1"),
    "autoattack restarts fractional": (('draws = 2', 'draws = 2\nautoattack_restarts = 1.5'),
                                       "autoattack_restarts must be an integer"),
    "autoattack restarts zero": (('draws = 2', 'draws = 2\nautoattack_restarts = 0'),
                                 "autoattack_restarts must be an integer >= 1"),
    "autoattack targets bool": (('draws = 2', 'draws = 2\nautoattack_targets = true'),
                                "autoattack_targets must be an integer"),
    "autoattack targets zero": (('draws = 2', 'draws = 2\nautoattack_targets = 0'),
                                "autoattack_targets must be an integer >= 1"),
    "autoattack attacks unknown": (('draws = 2', 'draws = 2\nautoattack_attacks = ["apgd-ce", "square"]'),
                                   "autoattack_attacks must be a non-empty list of distinct names from apgd-ce"),
    "autoattack attacks text": (('draws = 2', 'draws = 2\nautoattack_attacks = "apgd-ce"'),
                                "autoattack_attacks must be a non-empty list"),
    "autoattack attacks empty": (('draws = 2', 'draws = 2\nautoattack_attacks = []'),
                                 "autoattack_attacks must be a non-empty list"),
    "autoattack attacks repeated": (('draws = 2', 'draws = 2\nautoattack_attacks = ["apgd-t", "apgd-t"]'),
                                    "autoattack_attacks must be a non-empty list of distinct names"),
    "autoattack attacks numbers": (('draws = 2', 'draws = 2\nautoattack_attacks = [1]'),
                                   "autoattack_attacks must be a non-empty list"),
    "autoattack norm unknown": (('method = "noise"', 'method = "autoattack"\nnorm = "l1"'), "norm must be one of"),
    "pgd+autoattack exact name": (('method = "noise"', 'method = "pgd + autoattack"'), "stability must be one of"),
    "kwargs not a table": (('kwargs = {', 'kwargs = "hidden=64"\nunused = {'), "unknown key"),
    "kwargs string": (('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }', 'kwargs = "x"'),
                      "kwargs must be a table"),
    "kwargs array": (('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }', 'kwargs = [1, 2]'),
                     "kwargs must be a table"),
    "K fractional": (('K = [10]', 'K = [4.7]'), "K must be an integer"),
    "K bool": (('K = [10]', 'K = [true]'), "K must be an integer"),
    "K zero": (('K = [10]', 'K = [0]'), "K must be an integer >= 1"),
    "K text": (('K = [10]', 'K = "10"'), "K must be an integer"),
    "K empty": (('K = [10]', 'K = []'), "K must be a non-empty list"),
    "kappas text": (('kappas = [0.01, 0.05]', 'kappas = ["a"]'), "kappas must be a number"),
    "kappas empty": (('kappas = [0.01, 0.05]', 'kappas = []'), "kappas must be a non-empty list"),
    "kappas negative": (('kappas = [0.01, 0.05]', 'kappas = [-0.1]'), "radii > 0"),
    "kappas above the pixel range": (('kappas = [0.01, 0.05]', 'kappas = [2.0]'), "linf kappas must lie in (0, 1]"),
    "kappas inf": (('kappas = [0.01, 0.05]', 'kappas = [inf]'), "kappas"),
    "label_pure text": (('delta = 0.05', 'delta = 0.05\nlabel_pure = "yes"'), "label_pure must be true or false"),
    "label_pure number": (('delta = 0.05', 'delta = 0.05\nlabel_pure = 1'), "label_pure must be true or false"),
    "partition unknown": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans++"'), "partition must be one of"),
    "partition number": (('delta = 0.05', 'delta = 0.05\npartition = 3'), "partition must be one of"),
    "method unknown": (('method = "noise"', 'method = "fgsm"'), "stability must be one of"),
    "method number": (('method = "noise"', 'method = 1'), "stability must be one of"),
    "intermediate unknown": (('draws = 2', 'draws = 2\nintermediate = "lp"'), "sound_intermediate"),
    "intermediate number": (('draws = 2', 'draws = 2\nintermediate = 2'), "sound_intermediate"),
    "exact under l2": (('method = "noise"', 'method = "exact"\nnorm = "l2"'), "norm must be 'linf' with stability exact"),
    "grid under l2": (('delta = 0.05\n\n[stability]\nmethod = "noise"',
                       'delta = 0.05\npartition = "grid"\n\n[stability]\nmethod = "noise"\nnorm = "l2"'),
                      "norm must be 'linf' with partition grid"),
    "norm unknown": (('method = "noise"', 'method = "noise"\nnorm = "l1"'), "norm must be one of"),
    "sample zero": (('draws = 2', 'draws = 2\nsample = 0'), "stability sample (stability.sample) must be an integer >= 1"),
    "sample fraction above one": (('draws = 2', 'draws = 2\nsample = 1.5'), "a fraction in (0, 1], got 1.5"),
    "sample text": (('draws = 2', 'draws = 2\nsample = "10%"'), "stability sample (stability.sample) must be a count"),
    "sample bool": (('draws = 2', 'draws = 2\nsample = true'), "stability sample (stability.sample) must be a count"),
    "sample with a sound method": (('method = "noise"', 'method = "ibp"\nsample = 100'),
                                   "stability sample (stability.sample) is for empirical methods"),
    "budget with an empirical method": (('draws = 2', 'draws = 2\nbudget = 100'),
                                        "stability budget (stability.budget) is for sound methods"),
    "budget zero": (('method = "noise"', 'method = "ibp"\nbudget = 0'),
                    "stability budget (stability.budget) must be an integer >= 1"),
    "budget fractional": (('method = "noise"', 'method = "ibp"\nbudget = 0.5'),
                          "stability budget (stability.budget) must be an integer"),
    "delta_s one": (('draws = 2', 'draws = 2\ndelta_s = 1.0'), "delta_s (stability.delta_s) must be in (0, 1)"),
    "delta_s text": (('draws = 2', 'draws = 2\ndelta_s = "low"'), "delta_s (stability.delta_s) must be a number"),
    "projection dim zero": (('delta = 0.05', 'delta = 0.05\nprojection_dim = 0'), "projection_dim must be an integer >= 1"),
    "progress text": (('draws = 2', 'draws = 2\n[run]\nprogress = "x"'), "progress must be true or false"),
    "device number": (('draws = 2', 'draws = 2\n[run]\ndevice = 3'), "unknown device 3"),
    "device unknown": (('draws = 2', 'draws = 2\n[run]\ndevice = "tpu"'), "unknown device 'tpu'"),
    "out not a string": (('draws = 2', 'draws = 2\n[run]\nout = 5'), "[run] out must be a non-empty string"),
    "factory_path not a string": (('draws = 2', 'draws = 2\n[run]\nfactory_path = 5'),
                                  "[run] factory_path must be a non-empty string"),
    "factory_path not a folder": (('draws = 2', 'draws = 2\n[run]\nfactory_path = "no-such-folder"'),
                                  "no-such-folder is not a folder"),
    "workers negative": (('draws = 2', 'draws = 2\n[run]\nworkers = -1'),
                         'workers (processes decoding the data) must be an integer >= 0 or "auto", got -1'),
    "workers text": (('draws = 2', 'draws = 2\n[run]\nworkers = "many"'),
                     'workers (processes decoding the data) must be an integer >= 0 or "auto", got \'many\''),
    "workers fraction": (('draws = 2', 'draws = 2\n[run]\nworkers = 1.5'), "must be an integer >= 0 or \"auto\", got 1.5"),
    "workers bool": (('draws = 2', 'draws = 2\n[run]\nworkers = true'), "must be an integer >= 0 or \"auto\", got True"),
    "unknown key in data": (('split_seed = 0', 'split_seed = 0\nfoo = 1'), "unknown key(s) ['foo'] in [data]"),
    "unknown key in bounds": (('delta = 0.05', 'delta = 0.05\nkappa = 0.1'), "unknown key 'kappa' in [bounds]"),
    "unknown key in stability": (('draws = 2', 'draws = 2\neps = 0.1'), "unknown key 'eps' in [stability]"),
    "unknown key in models": (('name = "m"', 'name = "m"\nweight = "x.pt"'), "unknown key(s) ['weight']"),
    "unknown section": (('[bounds]', '[bound]'), "unknown section"),
    "data not a table": (('[data]\ntrain = "digits"\nheldout_fraction = 0.25\nsplit_seed = 0\n', 'data = 3\n'),
                         "[data] must be a table"),
    "no train": (('train = "digits"\n', ''), "[data] needs 'train'"),
    "train number": (('train = "digits"', 'train = 3'), "[data] train must be a non-empty string"),
    "train unknown": (('train = "digits"', 'train = "no-such-data"'), "unknown dataset 'no-such-data'"),
    "heldout unknown": (('split_seed = 0', 'split_seed = 0\nheldout = "nowhere.npz"'), "unknown dataset"),
    "models as a table": (('[[models]]', '[models]'), "at least one [[models]] entry"),
    "model without factory": (('factory = "mlp"\n', ''), "needs a 'factory'"),
    "factory number": (('factory = "mlp"', 'factory = 3'), "factory must be a non-empty string"),
    "model name with slash": (('name = "m"', 'name = "a/b"'), "model name 'a/b' is not allowed"),
    "model name with dots": (('name = "m"', 'name = "../evil"'), "model name '../evil' is not allowed"),
    "model name dot": (('name = "m"', 'name = ".."'), "model name '..' is not allowed"),
    "model name empty": (('name = "m"', 'name = ""'), "model name '' is not allowed"),
    "model name number": (('name = "m"', 'name = 3'), "model name 3 is not allowed"),
    "model names repeated": (('[bounds]', '[[models]]\nname = "m"\nfactory = "mlp"\n\n[bounds]'), "must be unique"),
    "input_normalization channels": (('name = "m"', 'name = "m"\ninput_normalization = "imagenet"'),
                                     "has 3 channels but the data have 1"),
    "weights number": (('weights = "digits_mlp.safetensors"', 'weights = 3'), "weights must be a non-empty string"),
    "weights missing": (('weights = "digits_mlp.safetensors"', 'weights = "nope.pt"'), "not found"),
    "weights of another model": (('hidden = [64]', 'hidden = [32]'), "does not fit 'mlp'"),
    "not TOML": (('[data]', '[data'), "is not valid TOML"),
    "preprocess on a named dataset": (('split_seed = 0', 'split_seed = 0\npreprocess = "imagenet"'),
                                      "preprocess apply to image folders only"),
    "preprocess unknown preset": (('split_seed = 0', 'split_seed = 0\npreprocess = "vgg"'),
                                  "unknown preprocessing preset 'vgg'"),
    "preprocess number": (('split_seed = 0', 'split_seed = 0\npreprocess = 224'), "[data] preprocess must be"),
    "preprocess unknown key": (('split_seed = 0', 'split_seed = 0\npreprocess = { size = 224 }'),
                               "unknown key(s) ['size'] in [data] preprocess"),
    "preprocess resize zero": (('split_seed = 0', 'split_seed = 0\npreprocess = { resize = 0 }'),
                               "resize must be >= 1 pixel"),
    "preprocess resize text": (('split_seed = 0', 'split_seed = 0\npreprocess = { resize = "256" }'),
                               "resize must be a positive integer or [height, width]"),
    "preprocess crop three numbers": (('split_seed = 0', 'split_seed = 0\npreprocess = { crop = [1, 2, 3] }'),
                                      "crop must be a positive integer or [height, width]"),
    "preprocess interpolation": (('split_seed = 0', 'split_seed = 0\npreprocess = { interpolation = "cubic" }'),
                                 "interpolation must be one of"),
    "preprocess mode": (('split_seed = 0', 'split_seed = 0\npreprocess = { mode = "CMYK" }'),
                        "mode must be 'RGB' or 'L'"),
    "classes unknown name": (('split_seed = 0', 'split_seed = 0\nclasses = "imagenet21k"'),
                             "neither one of imagenet, cifar10 nor a labels file"),
    "classes one name": (('split_seed = 0', 'split_seed = 0\nclasses = ["cat"]'), "at least 2 classes"),
    "classes repeated": (('split_seed = 0', 'split_seed = 0\nclasses = ["cat", "cat"]'), "must be unique"),
    "classes numbers": (('split_seed = 0', 'split_seed = 0\nclasses = [1, 2]'), "classes must be"),
    "classes on a named dataset": (('split_seed = 0', 'split_seed = 0\nclasses = "cifar10"'),
                                   "classes apply to image folders only"),
    "normalization unknown preset": (('name = "m"', 'name = "m"\ninput_normalization = "vgg"'),
                                     "input_normalization must be one of"),
    "normalization table without std": (('name = "m"', 'name = "m"\ninput_normalization = { mean = [0.5] }'),
                                        "needs exactly mean and std"),
    "normalization table text": (('name = "m"', 'name = "m"\ninput_normalization = { mean = ["a"], std = [1] }'),
                                 "input_normalization mean must be a number"),
    "normalization zero std": (('name = "m"', 'name = "m"\ninput_normalization = { mean = [0.5], std = [0] }'),
                               "std must be positive"),
    "normalization from a model without one": (('name = "m"', 'name = "m"\ninput_normalization = "model"'),
                                               "declares no input mean/std"),
    "kmeans fit unknown": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit = \"test\"'), "kmeans_fit must be one of heldout-split, train"),
    "kmeans fit number": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit = 1'), "kmeans_fit must be one of"),
    "kmeans fit fraction one": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit_fraction = 1.0'), "kmeans_fit_fraction must be strictly between 0 and 1"),
    "kmeans fit fraction text": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit_fraction = \"half\"'), "kmeans_fit_fraction must be a number"),
    "kmeans fit fraction leaves no held-out sample": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit_fraction = 0.9999'), "leaves none for evaluation"),
    "kmeans fit split smaller than K": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_fit_fraction = 0.01'), "fewer than K = 10"),
    "kmeans iterations negative": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_iterations = -1'), "kmeans_iterations must be an integer >= 0"),
    "kmeans iterations fractional": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_iterations = 2.5'), "kmeans_iterations must be an integer"),
    "kmeans seeding sample zero": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_seeding_sample = 0'), "kmeans_seeding_sample must be an integer >= 1"),
    "kmeans seeding sample below K": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_seeding_sample = 3'), "kmeans_seeding_sample = 3 is smaller than K = 10"),
    "kmeans features empty": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_features = \"\"'), "kmeans_features must name a layer"),
    "kmeans features number": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_features = 4'), "kmeans_features must name a layer"),
    "kmeans features unknown layer": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_features = \"layer4\"'), "the model has no layer 'layer4'; its layers are: net"),
    "kmeans backend unknown": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans"\nkmeans_backend = \"sklearn\"'), "kmeans_backend must be one of torch, faiss"),
    "kmeans key without the kmeans partition": (('delta = 0.05', 'delta = 0.05\nkmeans_fit = "train"'),
                                                'kmeans_fit: only for partition = "kmeans"'),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value(case: str, workdir: Path) -> None:
    edit, expected = CONFIG_CASES[case]
    assert_refused(_evaluate(_config(workdir, edit)), workdir, expected)


@pytest.mark.parametrize("method", ["autoattack", "pgd+autoattack"])
def test_autoattack_without_its_package(method: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import fails as if it were not installed
    cfg = _config(workdir, ('method = "noise"', f'method = "{method}"'))
    assert_refused(_evaluate(cfg), workdir, "needs the optional package pyautoattack", "genbound[autoattack]",
                   "importing it failed")


def test_missing_config_file(workdir: Path) -> None:
    assert_refused(_evaluate("nope.toml"), workdir, "config file not found")


def test_empty_weights_file(workdir: Path) -> None:
    (workdir / "empty.pt").write_bytes(b"")
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "empty.pt"'))
    assert_refused(_evaluate(cfg), workdir, "empty.pt", "cannot read as a torch checkpoint")


def test_empty_safetensors_file(workdir: Path) -> None:
    (workdir / "empty.safetensors").write_bytes(b"")
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "empty.safetensors"'))
    assert_refused(_evaluate(cfg), workdir, "empty.safetensors", "not a readable safetensors file")


def test_empty_dataset(workdir: Path) -> None:
    np.savez(workdir / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    cfg = _config(workdir, ('train = "digits"', 'train = "empty.npz"'))
    assert_refused(_evaluate(cfg), workdir, "empty")


# ---------------------------------------------------------------------------------------------
# Category 4: factories (evaluate and wci --model)
# ---------------------------------------------------------------------------------------------
FACTORY_MODULE = textwrap.dedent("""\
    import os
    from os import system
    import torch
    from torch import nn

    class NotAModule:
        def __init__(self, **kw):
            pass

    def raises(**kw):
        raise RuntimeError("the factory's own failure")

    def not_a_module(**kw):
        return 42

    def wrong_input(**kw):  # built for 28x28 MNIST, given 8x8 digits
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def wrong_output_rank(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Unflatten(1, (2, 5)))

    def too_few_outputs(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))

    def too_many_outputs(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1000))

    def nan_weights(**kw):
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        with torch.no_grad():
            m[1].weight[0, 0] = float("nan")
        return m

    class NanOutput(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("inf"))

    def nan_output(**kw):
        return NanOutput()

    def good(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
""")

FACTORY_CASES = {
    ":": "unknown model factory ':'",
    "..bad:fn": "unknown model factory '..bad:fn'",
    "a b:fn": "unknown model factory",
    "mod:": "unknown model factory",
    "no_such_module_xyz:fn": "cannot import module 'no_such_module_xyz'",
    "broken_syntax:build": "SyntaxError",
    "raising_import:build": "ZeroDivisionError",
    "gbfactories:missing": "has no 'missing'",
    "gbfactories:raises": "raised RuntimeError: the factory's own failure",
    "gbfactories:not_a_module": "returned int, not a torch.nn.Module",
    "gbfactories:NotAModule": "is not a model factory",
    "gbfactories:system": "is not a model factory",
    "gbfactories:os": "is not a model factory",
    "gbfactories:wrong_input": "fails on inputs of shape (1, 8, 8)",
    "gbfactories:wrong_output_rank": "a classifier must return logits of shape (batch, classes)",
    "gbfactories:too_few_outputs": "has 5 outputs but the data have 10 classes",
    "gbfactories:too_many_outputs": "has 1000 outputs but the data have 10 classes",
    "gbfactories:nan_weights": "holds NaN or inf values",
    "gbfactories:nan_output": "returned NaN or inf logits",
    "os:system": "standard library",
    "subprocess:run": "standard library",
    "builtins:eval": "standard library",
    "shutil:rmtree": "standard library",
    "torch:load": "is not a model factory",
    "numpy:zeros": "is not a model factory",
}


def _factory_modules(root: Path) -> None:
    (root / "gbfactories.py").write_text(FACTORY_MODULE)
    (root / "broken_syntax.py").write_text("def build(:\n")
    (root / "raising_import.py").write_text("1 / 0\n")


@pytest.mark.parametrize("factory", sorted(FACTORY_CASES))
def test_bad_factory_in_config(factory: str, workdir: Path) -> None:
    _factory_modules(workdir)
    cfg = _config(workdir, ('factory = "mlp"', f'factory = "{factory}"'),
                  ('weights = "digits_mlp.safetensors"\n', ''))
    assert_refused(_evaluate(cfg), workdir, FACTORY_CASES[factory])


@pytest.mark.parametrize("factory", ["gbfactories:raises", "gbfactories:wrong_input", "gbfactories:too_few_outputs",
                                     "gbfactories:nan_output", "os:system", "broken_syntax:build", ":"])
def test_bad_factory_in_wci(factory: str, workdir: Path) -> None:
    _factory_modules(workdir)
    argv = ["wci", "--model", factory, "--data", "digits", "--subset", "8", "--probes", "2", "--no-normalize",
            "--json", "w.json", "--quiet"]
    assert_refused(argv, workdir, FACTORY_CASES[factory])


def test_os_system_is_refused_before_it_is_called(workdir: Path) -> None:
    marker = workdir / "ran"
    cfg = _config(workdir, ('factory = "mlp"', 'factory = "os:system"'),
                  ('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }',
                   f'kwargs = {{ command = "touch {marker}" }}'), ('weights = "digits_mlp.safetensors"\n', ''))
    assert_refused(_evaluate(cfg), workdir, "standard library")
    assert not marker.exists()
    # the same callable re-exported by a user's module is refused by where it comes from
    _factory_modules(workdir)
    cfg = _config(workdir, ('factory = "mlp"', 'factory = "gbfactories:system"'),
                  ('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }',
                   f'kwargs = {{ command = "touch {marker}" }}'), ('weights = "digits_mlp.safetensors"\n', ''))
    assert_refused(_evaluate(cfg), workdir, "is not a model factory")
    assert not marker.exists()


def test_factory_file_is_recorded(workdir: Path) -> None:
    from genbound.models import load_model
    _factory_modules(workdir)
    model = load_model("gbfactories:good")
    assert model.genbound_model["factory_file"] == str(workdir / "gbfactories.py")


# ---------------------------------------------------------------------------------------------
# Category 5: train and wci flags
# ---------------------------------------------------------------------------------------------
TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--no-progress", "--out", "w.pt"]
FLAG_CASES = {
    "train --lr nan": (TRAIN + ["--lr", "nan"], "argument --lr"),
    "train --lr inf": (TRAIN + ["--lr", "inf"], "argument --lr"),
    "train --lr zero": (TRAIN + ["--lr", "0"], "argument --lr"),
    "train --lr text": (TRAIN + ["--lr", "fast"], "argument --lr"),
    "train --epochs zero": (TRAIN + ["--epochs", "0"], "argument --epochs"),
    "train --batch-size text": (TRAIN + ["--batch-size", "big"], "argument --batch-size"),
    "train --weight-decay negative": (TRAIN + ["--weight-decay", "-1"], "argument --weight-decay"),
    "train --random-labels above 1": (TRAIN + ["--random-labels", "1.5"], "argument --random-labels"),
    "train --heldout-fraction 1": (TRAIN + ["--heldout-fraction", "1"], "argument --heldout-fraction"),
    "train --seed text": (TRAIN + ["--seed", "x"], "argument --seed"),
    "train --model-arg without =": (TRAIN + ["--model-arg", "hidden"], "expected KEY=VALUE"),
    "train --model-arg empty key": (TRAIN + ["--model-arg", "=3"], "expected KEY=VALUE"),
    "train --model-arg malformed list": (TRAIN + ["--model-arg", "hidden=[128"], "not a valid Python literal"),
    "train --model-arg unknown": (TRAIN + ["--model-arg", "depth=3"], "rejected its arguments"),
    "train --model-arg wrong type": (TRAIN + ["--model-arg", "hidden=abc"], "factory 'mlp' raised ValueError"),
    "train --model-arg negative width": (["train", "--data", "digits", "--model", "small_cnn", "--model-arg", "width=-3",
                                         "--out", "w.pt"], "factory 'small_cnn' raised RuntimeError"),
    "train --out suffix": (["train", "--data", "digits", "--out", "w.txt"], "--out must end in"),
    "wci --eps nan": (["wci", "--model", "mlp", "--data", "digits", "--eps", "nan"], "argument --eps"),
    "wci --eps negative": (["wci", "--model", "mlp", "--data", "digits", "--eps", "-0.1"], "argument --eps"),
    "wci --step-size zero": (["wci", "--model", "mlp", "--data", "digits", "--step-size", "0"], "argument --step-size"),
    "wci --delta 1": (["wci", "--model", "mlp", "--data", "digits", "--delta", "1"], "argument --delta"),
    "wci --rel-se nan": (["wci", "--model", "mlp", "--data", "digits", "--rel-se", "nan"], "argument --rel-se"),
    "wci --rel-se zero": (["wci", "--model", "mlp", "--data", "digits", "--rel-se", "0"], "argument --rel-se"),
    "wci --rel-se one": (["wci", "--model", "mlp", "--data", "digits", "--rel-se", "1.5"], "argument --rel-se"),
    "wci --rel-se word": (["wci", "--model", "mlp", "--data", "digits", "--rel-se", "five"], "argument --rel-se"),
    "wci --sketch negative": (["wci", "--model", "mlp", "--data", "digits", "--sketch", "-1"], "argument --sketch"),
    "wci --sketch fractional": (["wci", "--model", "mlp", "--data", "digits", "--sketch", "2.5"], "argument --sketch"),
    "wci --max-products one": (["wci", "--model", "mlp", "--data", "digits", "--max-products", "1"],
                               "argument --max-products"),
    "wci --max-products word": (["wci", "--model", "mlp", "--data", "digits", "--max-products", "many"],
                                "argument --max-products"),
    "wci --probes one": (["wci", "--model", "mlp", "--data", "digits", "--probes", "1"], "argument --probes"),
    "wci --probes nan": (["wci", "--model", "mlp", "--data", "digits", "--probes", "nan"], "argument --probes"),
    "wci --probes with --rel-se": (["wci", "--model", "mlp", "--data", "digits", "--probes", "8", "--rel-se", "0.1"],
                                   "exclude each other"),
    "wci --estimator unknown": (["wci", "--model", "mlp", "--data", "digits", "--estimator", "kfac"],
                                "argument --estimator"),
    "check --draws zero": (["check", "coverage", "--draws", "0"], "argument --draws"),
    "check --draws text": (["check", "coverage", "--draws", "many"], "argument --draws"),
    "check --seed negative": (["check", "coverage", "--seed", "-1"], "argument --seed"),
    "check --delta nan": (["check", "coverage", "--delta", "nan"], "delta must be in (0, 1)"),
    "check unknown": (["check", "everything"], "unknown check 'everything'"),
    "study --delta text": (["study", "certified-lowdim", "--out", "s", "--delta", "x"], "delta must be a number"),
    "robust-overfitting --epochs 1": (["study", "robust-overfitting", "--out", "s", "--epochs", "1"], "argument --epochs"),
    "robust-overfitting --label-noise 1": (["study", "robust-overfitting", "--out", "s", "--label-noise", "1"],
                                           "argument --label-noise"),
    "robust-overfitting --label-noise nan": (["study", "robust-overfitting", "--out", "s", "--label-noise", "nan"],
                                             "argument --label-noise"),
    "robust-overfitting --threads 0": (["study", "robust-overfitting", "--out", "s", "--threads", "0"],
                                       "argument --threads"),
    "robust-overfitting --seed text": (["study", "robust-overfitting", "--out", "s", "--seed", "x"], "argument --seed"),
    "robust-overfitting --runs unknown": (["study", "robust-overfitting", "--out", "s", "--quick", "--runs", "sgd_magic"],
                                          "sgd_magic"),
    "wci --subset text": (["wci", "--model", "mlp", "--data", "digits", "--subset", "all"], "argument --subset"),
    "wci --model-kwargs not JSON": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs", "{hidden: 3}"],
                                    "--model-kwargs is not valid JSON"),
    "wci --model-kwargs a list": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs", "[1]"],
                                  "--model-kwargs must be a JSON object"),
    "wci --device unknown": (["wci", "--model", "mlp", "--data", "digits", "--device", "tpu"], "unknown device"),
    "wci wrong input shape": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs",
                               '{"input_shape": [1, 7, 7]}'], "fails on inputs of shape (1, 8, 8)"),
    "wci wrong class count": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs",
                               '{"input_shape": [1, 8, 8], "num_classes": 3}'], "has 3 outputs but the data have 10"),
    # genbound reproduce: flags, then mistakes its first run finds (nothing may be left behind)
    "reproduce unknown protocol": (["reproduce", "smith2030", "--data", "digits", "--model", "mlp"],
                                   "unknown protocol 'smith2030'"),
    "reproduce --K zero": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--K", "0"], "argument --K"),
    "reproduce --K text": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--K", "many"],
                           "argument --K"),
    "reproduce --kappas nan": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--kappas", "nan"],
                               "argument --kappas"),
    "reproduce --kappas zero": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--kappas", "0"],
                                "argument --kappas"),
    "reproduce --kappas in 0-255 units": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--kappas",
                                           "4"], "argument --kappas"),
    "reproduce --seeds zero": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--seeds", "0"],
                               "argument --seeds"),
    "reproduce --steps zero": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--steps", "0"],
                               "argument --steps"),
    "reproduce --draws text": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--draws", "x"],
                               "argument --draws"),
    "reproduce --delta 1": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--delta", "1"],
                            "argument --delta"),
    "reproduce --stability unknown": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--stability",
                                       "magic"], "argument --stability"),
    "reproduce --heldout-fraction 1": (["reproduce", "than2024", "--data", "digits", "--model", "mlp",
                                        "--heldout-fraction", "1"], "argument --heldout-fraction"),
    "reproduce --batch-size zero": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--batch-size",
                                     "0"], "argument --batch-size"),
    "reproduce without --data": (["reproduce", "than2024", "--model", "mlp"], "--data"),
    "reproduce without models": (["reproduce", "than2024", "--data", "digits"], "give the models"),
    "reproduce --model empty weights": (["reproduce", "than2024", "--data", "digits", "--model", "mlp="],
                                        "expected FACTORY or FACTORY=WEIGHTS"),
    "reproduce --model missing weights": (["reproduce", "than2024", "--data", "digits", "--model", "mlp=nope.pt"],
                                          "weights file 'nope.pt' not found"),
    "reproduce --model twice": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--model", "mlp"],
                                "model names must be unique"),
    "reproduce --models missing": (["reproduce", "than2024", "--data", "digits", "--models", "m.toml"],
                                   "--models: file 'm.toml' not found"),
    "reproduce --models not TOML": (["reproduce", "than2024", "--data", "digits", "--models", "digits_mlp.safetensors"],
                                    "not valid TOML"),
    "reproduce --data missing folder": (["reproduce", "than2024", "--data", "./no/such", "--model", "mlp"],
                                        "no such folder or file"),
    "reproduce --heldout missing": (["reproduce", "than2024", "--data", "digits", "--heldout", "val", "--model", "mlp"],
                                    "--heldout 'val': no such folder"),
    "reproduce --preprocess unknown": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--preprocess",
                                        "huge"], "unknown preprocessing preset 'huge'"),
    "reproduce --classes unknown": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--classes",
                                     "birds"], "neither one of imagenet, cifar10 nor a labels file"),
    "reproduce --device unknown": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--device", "tpu"],
                                   "unknown device"),
    "reproduce protocol on non-image data": (["reproduce", "than2024", "--data", "digits", "--model", "mlp", "--out",
                                              "runs/r"], "apply to image folders only"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flag(case: str, workdir: Path) -> None:
    argv, expected = FLAG_CASES[case]
    assert_refused(list(argv), workdir, expected)


# ---------------------------------------------------------------------------------------------
# Category 6: accepted although wrong
# ---------------------------------------------------------------------------------------------
def _stats_npz(path: Path, kappas: list[float], stable: np.ndarray, **extra: object) -> str:
    n = stable.shape[0]
    np.savez(path, train_cell=np.arange(n) % 3, train_loss=np.zeros(n, np.uint8), heldout_cell=np.arange(4) % 3,
             heldout_loss=np.zeros(4, np.uint8), K=np.int64(3), kappas=np.asarray(kappas, np.float64),
             train_stable=stable, **extra)
    return str(path)


def test_sound_flags_must_be_monotone_in_kappa(workdir: Path) -> None:
    stable = np.array([[True, True], [False, True], [True, False]])  # sample 1: stable only at the larger kappa
    path = _stats_npz(workdir / "s.npz", [0.01, 0.02], stable, stability_sound=np.bool_(True),
                      stability_method=np.str_("crown"))
    assert_refused(["bounds", path], workdir, "not monotone in kappa", "sample 1")


def test_empirical_flags_may_be_non_monotone(workdir: Path) -> None:
    stable = np.array([[True, True], [False, True], [True, False]])
    path = _stats_npz(workdir / "s.npz", [0.01, 0.02], stable, stability_method=np.str_("pgd"))
    assert cli.main(["bounds", path]) == 0


def test_duplicate_kappas_with_contradictory_flags(workdir: Path) -> None:
    stable = np.array([[True, False], [True, True], [False, False]])
    path = _stats_npz(workdir / "s.npz", [0.01, 0.01], stable)
    assert_refused(["bounds", path], workdir, "kappa 0.01 is given 2 times with different stability flags")


def test_duplicate_kappas_with_equal_flags_count_once() -> None:
    from genbound.bounds import SampleStats
    stable = np.array([[True, True, False], [False, False, False], [True, True, True]])
    s = SampleStats(train_cell=[0, 1, 2], train_loss=[0, 0, 1], heldout_cell=[0], heldout_loss=[0], K=3,
                    kappas=[0.01, 0.01, 0.02], train_stable=stable)
    assert s.kappas.tolist() == [0.01, 0.02]
    assert s.train_stable.tolist() == [[True, False], [False, False], [True, True]]


def test_labels_outside_the_models_classes(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(workdir / "d.npz", x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 12)
    cfg = _config(workdir, ('train = "digits"', 'train = "d.npz"'))
    assert_refused(_evaluate(cfg), workdir, "has 10 outputs but the data have 12 classes")


def test_nan_weights_in_a_weights_file(workdir: Path) -> None:
    from safetensors.numpy import load_file, save_file
    sd = load_file(str(workdir / "digits_mlp.safetensors"))
    key = sorted(sd)[0]
    sd[key] = sd[key].copy()
    sd[key].flat[0] = np.inf
    save_file(sd, str(workdir / "inf.safetensors"))
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "inf.safetensors"'))
    assert_refused(_evaluate(cfg), workdir, "holds NaN or inf values", "inf.safetensors")


def test_python_api_refuses_what_the_cli_refuses() -> None:
    import torch
    from torch import nn

    from genbound import Config, evaluate
    from genbound.data import TensorSource
    from genbound.errors import UserInputError
    src = TensorSource(torch.rand(20, 1, 8, 8), torch.arange(20) % 10)
    good = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = Config(kappas=[0.01], K=[4], stability="noise", noise_draws=1, progress=False)
    with pytest.raises(UserInputError, match="is not allowed"):
        evaluate({"../x": good}, src, src, cfg)
    with pytest.raises(UserInputError, match="has 3 outputs but the data have 10 classes"):
        evaluate({"m": nn.Sequential(nn.Flatten(), nn.Linear(64, 3))}, src, src, cfg)
    with pytest.raises(UserInputError, match="fails on inputs of shape"):
        evaluate({"m": nn.Sequential(nn.Flatten(), nn.Linear(63, 10))}, src, src, cfg)
    with pytest.raises(UserInputError, match="autoattack_iters must be an integer >= 1"):
        Config(stability="autoattack", autoattack_iters=0)
    with pytest.raises(UserInputError, match="autoattack_attacks must be a non-empty list"):
        Config(stability="pgd+autoattack", autoattack_attacks=["fab-t"])


# ---------------------------------------------------------------------------------------------
# The real console command, in a subprocess (the one-line contract outside pytest's capture)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, expected", [
    (('K = [10]', 'K = [4.7]'), "K must be an integer"),
    (('factory = "mlp"', 'factory = "os:system"'), "standard library"),
])
def test_console_command(edit: tuple[str, str], expected: str, workdir: Path) -> None:
    cfg = _config(workdir, edit)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cli.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")])}
    before = _files(workdir)
    r = subprocess.run([sys.executable, "-m", "genbound", *_evaluate(cfg)], capture_output=True, text=True,
                       cwd=workdir, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert expected in r.stderr
    assert _files(workdir) - before == set()


# ---------------------------------------------------------------------------------------------
# Data handed to --data / [data] train: arrays and image folders
# ---------------------------------------------------------------------------------------------
def _data_cases(root: Path) -> dict[str, tuple[str, str]]:
    from PIL import Image
    z = np.zeros((10, 1, 8, 8), np.float32)
    arrays = {
        "nan pixels": (dict(x=np.full_like(z, np.nan), y=np.arange(10)), "pixel values must lie in [0, 1]"),
        "pre-normalized pixels": (dict(x=z - 0.5, y=np.arange(10)), "pixel values must lie in [0, 1]"),
        "8-bit values as floats": (dict(x=z + 255, y=np.arange(10)), "divide 8-bit images by 255"),
        "text images": (dict(x=np.array(["a"] * 10), y=np.arange(10)), "images must be numeric arrays"),
        "object images": (dict(x=np.array([None] * 10, dtype=object), y=np.arange(10)), "allow_pickle"),
        "5-d images": (dict(x=z[:, None], y=np.arange(10)), "images must have shape"),
        "negative labels": (dict(x=z, y=-np.arange(10)), "labels must be >= 0"),
        "fractional labels": (dict(x=z, y=np.arange(10) + 0.5), "labels must be integers"),
        "2-d labels": (dict(x=z, y=np.zeros((10, 2), int)), "labels must be a 1-D array"),
        "fewer labels": (dict(x=z, y=np.arange(5)), "10 images but 5 labels"),
        "no labels": (dict(x=z), "expected arrays named 'x' (images) and 'y' (labels)"),
        "one class": (dict(x=z[:1], y=np.zeros(1, int)), "num_classes must be >= 2"),
    }
    cases = {}
    for case, (arrs, expected) in arrays.items():
        path = root / (case.replace(" ", "_") + ".npz")
        np.savez(path, **arrs)
        cases[case] = (str(path), expected)
    (root / "imgs" / "a").mkdir(parents=True)
    (root / "imgs" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(root / "imgs" / "a" / "1.png")
    Image.new("RGB", (9, 8)).save(root / "imgs" / "b" / "2.png")
    cases["images of two sizes"] = (str(root / "imgs"), "has shape (3, 8, 9), expected (3, 8, 8)")
    (root / "undecodable" / "a").mkdir(parents=True)
    (root / "undecodable" / "a" / "x.png").write_bytes(b"not a png")
    cases["undecodable image"] = (str(root / "undecodable"), "cannot decode image")
    (root / "no_images" / "a").mkdir(parents=True)
    cases["folder without images"] = (str(root / "no_images"), "no images with extensions")
    (root / "no_classes").mkdir()
    cases["folder without class folders"] = (str(root / "no_classes"), "has no class sub-directories")
    cases["missing file"] = (str(root / "nope.npz"), "unknown dataset")
    return cases


DATA_CASES = ["nan pixels", "pre-normalized pixels", "8-bit values as floats", "text images", "object images",
              "5-d images", "negative labels", "fractional labels", "2-d labels", "fewer labels", "no labels",
              "one class", "images of two sizes", "undecodable image", "folder without images",
              "folder without class folders", "missing file"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(case: str, workdir: Path) -> None:
    data = workdir / "data"
    data.mkdir()
    path, expected = _data_cases(data)[case]
    argv = ["train", "--data", path, "--model", "mlp", "--epochs", "1", "--no-progress", "--out", "w.pt"]
    assert_refused(argv, workdir, expected)
