"""Files in and out: atomic writes of every output, and ``.npz`` archives read without trusting them.

Writing. Every file genbound writes goes through :func:`atomic_write` (a file object) or
:func:`atomic_path` (a temporary file name, for writers that need one, e.g. ``savefig``); logs
through :func:`append_text`. The bytes go to a temporary file ``.genbound-tmp-*`` in the target's
folder, which replaces the target (``os.replace``) only once it is complete and synced; a device
or a pipe (``/dev/null``, a FIFO) is written in place, and a symbolic link stays one. A full disk, a file-size limit or a killed
run therefore never leaves a partial file at the target, and the temporary file is removed on
failure. Errors are split in two:

- the path is wrong (the target is a folder, its folder does not exist or is a file): the user's
  to fix, :class:`~genbound.errors.UserInputError` (exit code 2). Commands check their targets
  with :func:`check_output_file` / :func:`make_output_folder` before any long work.
- the system refuses the write (disk full, file too large, permission, read-only file system,
  I/O error): :class:`~genbound.errors.OutputError` naming the path (exit code 74).

Reading. :func:`read_npz` reads the ``.npy`` members of a zip archive itself instead of
``numpy.load``: it refuses object (pickled) arrays before reading them, and checks the size each
member's header declares against the bytes the member holds and against the memory available,
before anything is allocated. A well-compressed array (e.g. a billion zeros) still loads when it
fits. Every defect of the file is one :class:`~genbound.errors.UserInputError`.

This module imports neither torch nor anything above ``genbound.errors``: ``genbound/bounds``
uses it.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import IO, Any, Iterator

import numpy as np

from genbound.errors import OutputError, UserInputError, first_line

TMP_PREFIX = ".genbound-tmp-"
MAX_NPY_HEADER = 10_000  # numpy's own default limit (numpy.lib.format, max_header_size)

_umask: int | None = None


def _file_mode() -> int:
    """0o666 minus the process umask: what ``open(path, "w")`` would have given (mkstemp gives 0o600)."""
    global _umask
    if _umask is None:
        _umask = os.umask(0)
        os.umask(_umask)
    return 0o666 & ~_umask


def _first_non_folder(folder: str) -> str | None:
    """The first ancestor of ``folder`` (itself included) that exists but is not a folder, if any."""
    p = os.path.abspath(folder)
    chain = []
    while True:
        chain.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for q in reversed(chain):
        if os.path.exists(q) and not os.path.isdir(q):
            return q
    return None


def _label(path: str, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def check_output_file(path: str | os.PathLike, flag: str | None = None, *, missing_folder: str = "error") -> str:
    """Check that ``path`` can name an output file (not a folder, in an existing folder); return it.

    ``missing_folder``: "error" (the default), "allow" (checked, nothing created: the writer creates
    it) or "create". Raises :class:`UserInputError` for a wrong path and :class:`OutputError` when
    the system refuses to create the folder.
    """
    if missing_folder not in ("error", "allow", "create"):
        raise ValueError(f"missing_folder must be 'error', 'allow' or 'create', got {missing_folder!r}")
    path = os.fspath(path)
    what = _label(path, flag)
    if not path or path.endswith(os.sep):
        raise UserInputError(f"{what}: give a file name, not a folder")
    if os.path.isdir(path):
        raise UserInputError(f"{what} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        blocker = _first_non_folder(folder)
        if blocker is not None:
            raise UserInputError(f"cannot write {what}: {blocker} is a file, not a folder")
        if missing_folder == "error":
            raise UserInputError(f"cannot write {what}: folder {folder} does not exist")
        if missing_folder == "allow":
            return path
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise _output_error(folder, exc) from None
    return path


def check_output_folder(path: str | os.PathLike, flag: str | None = None, *, parents: bool = True) -> str:
    """Check, creating nothing, that ``path`` can be an output folder; return it.

    For commands, before their long work (nothing is written until a run has something to write).
    Raises :class:`UserInputError` when ``path`` or one of its parents is a file, or, without
    ``parents``, when its parent folder does not exist.
    """
    path = os.fspath(path)
    what = _label(path, flag)
    if not path:
        raise UserInputError(f"{flag or 'the output folder'}: give a folder name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserInputError(f"{what} exists and is not a folder")
    blocker = _first_non_folder(path)
    if blocker is not None:
        raise UserInputError(f"cannot create {what}: {blocker} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not parents and not os.path.isdir(parent):
        raise UserInputError(f"cannot create {what}: folder {parent} does not exist")
    return path


def make_output_folder(path: str | os.PathLike, flag: str | None = None, *, parents: bool = True) -> str:
    """Create the output folder ``path`` (and, with ``parents``, its missing parents); return it.

    Raises :class:`UserInputError` as :func:`check_output_folder` does, and :class:`OutputError`
    when the system refuses to create the folder.
    """
    path = check_output_folder(path, flag, parents=parents)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _output_error(path, exc) from None
    return path


def _output_error(path: str, exc: OSError) -> OutputError:
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {errno.ENOSPC: "; free some disk space and rerun", errno.EFBIG: "; the file size limit was reached",
            errno.EDQUOT: "; the disk quota is exhausted"}.get(exc.errno or 0, "")
    return OutputError(f"cannot write {path}: {reason}{f' ({name})' if name else ''}{hint}")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary file name next to ``path``; on success it replaces ``path``, on failure it is removed.

    For writers that need a file name (``savefig``, ``save_file``); pass the format explicitly
    since the temporary name ends in ``suffix``. The caller's writer must have closed the file
    when the block ends. ``OSError`` inside the block becomes :class:`OutputError` naming ``path``.
    """
    path = check_output_file(path)
    real = os.path.realpath(path)  # a symbolic link stays one: the file it points to is replaced
    try:
        mode = os.stat(real).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        # a device or a pipe (/dev/null, /dev/stdout, a FIFO): written in place; never replaced by a file
        try:
            yield path
        except OSError as exc:
            raise _output_error(path, exc) from None
        return
    folder = os.path.dirname(real)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, real)
    except OSError as exc:
        _remove(tmp)
        if isinstance(exc, IsADirectoryError):
            raise UserInputError(f"cannot write {path}: it is a folder; give a file name") from None
        raise _output_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``mode`` "w" or "wb"); it replaces ``path`` when the block ends.

    Nothing is left at ``path`` (nor a temporary file) when the block raises or the system refuses
    a write; see the module docstring for the errors.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                os.fsync(fh.fileno())  # a delayed write error (NFS, quota) surfaces here, before the rename


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to a log (not atomic: a reader must tolerate a torn last line)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise _output_error(os.fspath(path), exc) from None


# --------------------------------------------------------------------------------------- reading


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup v2 limit; None if unknown."""
    avail: int | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as fh:
                left = int(limit) - int(fh.read().strip())
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and declared data size of one ``.npy`` member, read from its header only."""
    fmt = np.lib.format
    with zf.open(info) as fh:
        magic = fh.read(8)
        if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
            raise UserInputError(f"{where} is not a numpy array (.npy); save arrays with numpy.savez")
        version = (magic[6], magic[7])
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise UserInputError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
        # version 3.0 differs from 2.0 only in the header's text encoding (utf-8 instead of latin-1)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read_header(fh, max_header_size=MAX_NPY_HEADER)
        header_end = fh.tell()
    if dtype.hasobject:
        raise UserInputError(f"{where} holds Python objects (a pickled array), which genbound never loads "
                             "(allow_pickle=False: unpickling runs code); save plain numeric, boolean or string arrays")
    if any(int(d) < 0 for d in shape):
        raise UserInputError(f"{where} declares a negative dimension {tuple(shape)}; the file is corrupt")
    count = 1
    for d in shape:
        count *= int(d)
    declared = count * dtype.itemsize
    stored = info.file_size - header_end
    if declared > stored:
        raise UserInputError(
            f"{where} declares shape {tuple(shape)} of {dtype} ({_size(declared)}) but holds only {_size(max(stored, 0))}: "
            "the file is corrupt or truncated")
    return tuple(shape), dtype, declared


def read_npz(path: str | os.PathLike, *, what: str = "file") -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive (``numpy.savez``), read safely; keys without ``.npy``.

    Refuses, each with one :class:`UserInputError` naming ``path`` (and the member): a missing
    file or a folder, a file that is not a zip archive (or is a single ``.npy``), a corrupt,
    truncated or encrypted archive, members that are not ``.npy`` arrays, duplicate names, object
    (pickled) arrays, and sizes that the headers declare but the members do not hold or that
    exceed the available memory; the sizes are checked before any array is allocated.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserInputError(f"{what} {path} is a folder; give the .npz file")
    if not os.path.exists(path):
        raise UserInputError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise UserInputError(f"{what} {path} is not a regular file; give the .npz file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise UserInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if head == b"\x93NUMPY":
        raise UserInputError(f"{path} is a single .npy array; save the named arrays together with numpy.savez (.npz)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserInputError(f"{path} is not a readable .npz file (not a zip archive: {exc}); "
                             "save it with numpy.savez") from None
    with zf:
        out: dict[str, np.ndarray] = {}
        members: list[tuple[str, zipfile.ZipInfo]] = []
        total = 0
        seen: set[str] = set()
        for info in zf.infolist():
            if info.is_dir():
                continue
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            where = f"{path}: member {info.filename!r}"
            if key in seen:
                raise UserInputError(f"{path} holds two arrays named {key!r}; keep one")
            seen.add(key)
            if info.flag_bits & 0x1:
                raise UserInputError(f"{where} is encrypted; save the arrays with numpy.savez (no password)")
            try:
                _shape, _dtype, declared = _member_header(zf, info, where)
            except UserInputError:
                raise
            except (ValueError, SyntaxError) + _ZIP_ERRORS as exc:
                raise UserInputError(f"{where} cannot be read ({_why(exc)}); the file is corrupt") from None
            total += declared
            members.append((key, info))
        avail = available_memory()
        if avail is not None and total > avail:
            raise UserInputError(f"{path}: its arrays declare {_size(total)} in all, more than the {_size(avail)} of "
                                 "memory available; the file is corrupt, or too large for this machine")
        for key, info in members:
            where = f"{path}: member {info.filename!r}"
            try:
                with zf.open(info) as fh:
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
                    if fh.read(1):
                        raise UserInputError(f"{where} holds more bytes than its header declares; the file is corrupt")
            except UserInputError:
                raise
            except (ValueError, MemoryError) + _ZIP_ERRORS as exc:
                raise UserInputError(f"{where} cannot be read ({_why(exc)}); the file is corrupt") from None
    return out


def _why(exc: BaseException) -> str:
    text = first_line(exc, 160)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
