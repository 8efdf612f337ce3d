"""Artifact directories: the runtime file plus `manifest.json`, written atomically.

Everything is written into a temporary sibling directory which is renamed into place at the end,
so a crash or a bad input never leaves a half-written artifact where the user asked for one. The
rename never replaces what appeared meanwhile (renameat2 RENAME_NOREPLACE), and `--force` swaps an
earlier artifact out in one atomic exchange (RENAME_EXCHANGE) where the system has it. Only a
directory with a valid edgec manifest, holding none of the run's inputs, is ever replaced; the
debris of killed runs is recognised by the process id in its name and cleaned on the next run.
One run at a time writes an output directory (`output_lock`): a second run for the same `-o`
fails at once naming the first, instead of both exiting 0 with one artifact gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import glob
import hashlib
import json
import math
import os
import platform
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edgec.errors import BadInputError, EdgecError, first_line
from edgec.limits import undo_if_ended, utf8_path

__all__ = ["MANIFEST", "MANIFEST_SCHEMA", "package_versions", "sha256_file", "sha256_path", "size_on_disk", "versions", "write_artifact", "read_manifest", "utc_now",
           "write_text_atomic", "check_writable", "check_output_dir", "clean_stale", "strict_json", "strict_loads",
           "DuplicateKeyError", "output_lock"]

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgec.manifest/1"
_VERSIONED = ("edgec", "numpy", "onnx", "onnxruntime", "onnx-ir", "onnxscript")
#: The keys (and their types) every reader of a manifest relies on.
_MANIFEST_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "target": {"name": str, "descriptor": dict},
    "source": {"path": (str, type(None)), "format": str, "onnx": (str, type(None))},  # path None: a slim module
    "artifact": {"file": str, "sha256": str, "precision": str},
}
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if ctypes.util.find_library("c") else None
_AT_FDCWD, _RENAME_NOREPLACE, _RENAME_EXCHANGE = -100, 1, 2


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(*paths: str | Path) -> str:
    """sha256 of one file, or of several files / directories together (names and contents, in order;
    a directory's files sorted), e.g. an ONNX model with its external-data files."""
    if len(paths) == 1 and Path(paths[0]).is_file():
        return sha256_file(paths[0])
    digest = hashlib.sha256()
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            name = file.name if file == path else str(file.relative_to(path))
            digest.update(name.encode() + b"\0" + bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def size_on_disk(path: str | Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of the named distributions; those not installed are left out."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python and the packages that shape an artifact (edgec's own, and `extra`: the
    target backend's), for the manifest."""
    return {"python": platform.python_version(), **package_versions((*_VERSIONED, *extra))}


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class DuplicateKeyError(ValueError):
    """A JSON object gives one key twice; JSON leaves which one counts undefined, so edgec refuses it."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"key {key!r} is given twice")
        result[key] = value
    return result


def strict_loads(text: str) -> Any:
    """`json.loads` that refuses a key given twice (the reader of every JSON file edgec trusts)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def strict_json(value: Any) -> str:
    """`value` as strict JSON (RFC 8259 has no NaN or Infinity: an undefined number is null), indented, one
    trailing newline; the form of every JSON file edgec writes."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: str | Path, what: str) -> None:
    """Fail now, before any long work, if `path` cannot be written later: a missing or read-only parent,
    or a directory where a file goes."""
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise BadInputError(f"cannot write {what} {path}: it is a directory; give a file name")
    if not parent.is_dir():
        raise BadInputError(f"cannot write {what} {path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) and not (path.exists() and os.access(path, os.W_OK)):
        raise BadInputError(f"cannot write {what} {path}: directory {parent} is not writable")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file through a temp file in the same directory and an atomic rename.

    A symlink is followed; a device or FIFO (`/dev/null`, `/dev/stdout`, a pipe) is written in place,
    never renamed over; any other special file is refused. The file gets the umask's permissions.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        _write_special(path, text)
        return
    check_writable(path, "file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_special(path: Path, text: str) -> None:
    """Write into a character device or FIFO as it is (a FIFO without a reader is an error, not a hang)."""
    mode = path.stat().st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise BadInputError(f"cannot write {path}: it is {'a directory' if stat.S_ISDIR(mode) else 'a special file'},"
                            " not a file; give a file name")
    try:
        fd = os.open(path, os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(mode) else 0))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _rename2(source: Path, target: Path, flags: int) -> bool:
    """renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE; False where the system lacks it."""
    if _LIBC is None or not hasattr(_LIBC, "renameat2"):
        return False
    if _LIBC.renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(target))


def _place(staging: Path, output_dir: Path) -> None:
    """Rename `staging` to `output_dir`, failing if anything appeared there meanwhile (even an empty directory)."""
    try:
        if _rename2(staging, output_dir, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise BadInputError(f"output directory {output_dir} appeared while compiling (another run?); nothing was"
                            " replaced; pass --force to replace it") from None
    if output_dir.exists() or output_dir.is_symlink():
        raise BadInputError(f"output directory {output_dir} appeared while compiling; pass --force to replace it")
    os.rename(staging, output_dir)


def _swap(staging: Path, output_dir: Path, parent: Path) -> None:
    """Replace the artifact at `output_dir` with `staging`: one atomic exchange where the system has it, so
    `output_dir` is never missing; else two renames, the old artifact kept aside until the new one is in place."""
    _check_replaceable(output_dir)  # again, at the moment of the swap
    if _rename2(staging, output_dir, _RENAME_EXCHANGE):
        if not _is_edgec_artifact(staging):  # replaced between check and exchange: put it back
            _rename2(staging, output_dir, _RENAME_EXCHANGE)
            raise BadInputError(f"{output_dir} changed while compiling; it was left as it is")
        shutil.rmtree(staging)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-{os.getpid()}-", dir=parent))
    os.replace(output_dir, retired / "old")
    try:
        _place(staging, output_dir)
    except BaseException:
        os.rename(retired / "old", output_dir)  # put the previous artifact back
        retired.rmdir()
        raise
    shutil.rmtree(retired)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: Path, prefix: str, *, restore_to: Path | None = None) -> None:
    """Remove edgec's debris in `directory` (`<prefix><pid>-*` directories) left by processes that are gone.

    A replaced artifact set aside by a run killed mid-swap (`.old-<pid>-*/old`) goes back to `restore_to`
    when nothing is there; anything not matching edgec's own names, or of a live process, stays.
    """
    try:
        entries = list(directory.glob(f"{glob.escape(prefix)}*"))
    except OSError:
        return
    for entry in entries:
        pid, dash, _ = entry.name[len(prefix):].partition("-")
        if not dash or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        kept = entry / "old"
        if restore_to is not None and ".old-" in prefix and _is_edgec_artifact(kept) and not restore_to.exists():
            os.rename(kept, restore_to)
        shutil.rmtree(entry, ignore_errors=True)


_LOCK_MARK = "edgec output lock\n"


def _lock_path(output_dir: Path) -> Path:
    return output_dir.resolve().parent / f".{output_dir.name}.edgec-lock"


@contextlib.contextmanager
def output_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold `output_dir` for this run: a second run writing it meanwhile fails with one line naming this one.

    The lock is an `flock` on `.<name>.edgec-lock` beside the output, which the kernel releases when
    its process ends however it ends, so a killed run never blocks the next; the file is removed
    when the run is done. A file of that name that is not edgec's is left alone and refused.
    """
    path = _lock_path(Path(output_dir))
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise BadInputError(f"cannot lock {output_dir}: {path}: {exc.strerror or exc}") from exc
        try:
            holder = _take_lock(fd, path, Path(output_dir))
        except BaseException:
            os.close(fd)
            raise
        if holder:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one

    def remove() -> None:
        with contextlib.suppress(OSError):
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                path.unlink()

    try:
        with undo_if_ended(remove):
            yield
    finally:
        remove()
        os.close(fd)


def _take_lock(fd: int, path: Path, output_dir: Path) -> bool:
    """Lock the open lock file and write who holds it; False when the file was replaced meanwhile."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise BadInputError(f"cannot lock {output_dir}: {path} is not a regular file; remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").removeprefix(_LOCK_MARK).strip() or "another run"
        raise BadInputError(f"output directory {output_dir} is being written by another edgec run ({holder});"
                            " wait for it to finish or choose another -o") from None
    try:
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            return False
    except FileNotFoundError:
        return False
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    if text and not text.startswith(_LOCK_MARK):
        raise BadInputError(f"cannot lock {output_dir}: {path} exists and is not edgec's; remove or rename it")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{_LOCK_MARK}pid {os.getpid()} on {platform.node()}, since {utc_now()}\n".encode(), 0)
    return True


def write_artifact(
    output_dir: str | Path, fill: Callable[[Path], Mapping[str, Any]], *, force: bool = False,
    inputs: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Create `output_dir` atomically: `fill(tmp_dir)` writes the files and returns the manifest.

    Refuses an existing `output_dir` unless `force`, and replaces only an earlier edgec artifact that
    holds none of `inputs` (the files the run reads). The manifest gets the sha256 of every file.
    Directories and files follow the umask. Debris of earlier runs that were killed is cleaned first.
    """
    output_dir = Path(output_dir)
    parent = output_dir.resolve().parent
    clean_stale(parent, f".{output_dir.name}.tmp-")
    clean_stale(parent, f".{output_dir.name}.old-", restore_to=output_dir)
    check_output_dir(output_dir, force=force, inputs=inputs)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise BadInputError(f"cannot write {output_dir}: {exc.strerror or exc}") from exc
    try:
        os.chmod(staging, 0o777 & ~_umask())
        manifest = dict(fill(staging))
        manifest["files"] = {file.relative_to(staging).as_posix(): sha256_file(file)
                             for file in sorted(staging.rglob("*")) if file.is_file()}
        (staging / MANIFEST).write_text(strict_json(manifest), encoding="utf-8")
        if output_dir.exists() or output_dir.is_symlink():
            if not force:
                raise BadInputError(f"output directory {output_dir} appeared while compiling; pass --force to replace it")
            _swap(staging, output_dir, parent)
        else:
            _place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def check_output_dir(output_dir: str | Path, *, force: bool, inputs: Sequence[str | Path] = ()) -> None:
    """Everything about `-o` that can be known before the work starts (so it fails in seconds, not after it)."""
    output_dir = Path(output_dir)
    utf8_path(output_dir, "output directory")
    if output_dir.is_symlink() and not output_dir.exists():
        raise BadInputError(f"output directory {output_dir} is a dangling symlink; remove it or choose another path")
    if output_dir.exists() and not force:
        raise BadInputError(f"output directory {output_dir} already exists; pass --force to replace it")
    if output_dir.exists():
        _check_replaceable(output_dir)
        inside = [str(path) for path in map(Path, inputs) if Path(path).resolve().is_relative_to(output_dir.resolve())]
        if inside:
            raise BadInputError(f"cannot replace {output_dir}: it holds this run's input {inside[0]}; write the"
                                " artifact somewhere else")
    parent = output_dir.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"cannot write {output_dir}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {output_dir}: directory {parent} is not writable")


def _is_edgec_artifact(path: Path) -> bool:
    try:
        read_manifest(path)
    except BadInputError:
        return False
    return not path.is_symlink() and path.is_dir()


def _check_replaceable(output_dir: Path) -> None:
    """`--force` replaces an earlier artifact, never a directory of the user's own (or the one we are in)."""
    if output_dir.is_symlink() or not output_dir.is_dir():
        raise BadInputError(f"--force replaces only an earlier edgec artifact directory; {output_dir} is not one")
    if not _is_edgec_artifact(output_dir):
        raise BadInputError(f"--force replaces only an earlier edgec artifact; {output_dir} has no edgec {MANIFEST}")
    resolved = output_dir.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise BadInputError(f"cannot replace {output_dir}: it contains the current directory")


def _manifest_problem(manifest: Any) -> str | None:
    """What keeps a parsed manifest from being an edgec manifest; None when it is one."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("schema"), str) \
            or not manifest["schema"].startswith("edgec.manifest/"):
        return "is not an edgec manifest"
    for table, keys in _MANIFEST_KEYS.items():
        value = manifest.get(table)
        if not isinstance(value, dict):
            return f"has no '{table}' table"
        for key, kind in keys.items():
            if key not in value or not isinstance(value[key], kind):
                return f"has no valid '{table}.{key}'"
    from edgec.frontends import FORMATS  # deferred: the frontends import onnx
    from edgec.target import check_descriptor

    if manifest["source"]["format"] not in FORMATS:
        return "has no valid 'source.format'"
    try:
        check_descriptor(manifest["target"]["descriptor"], "target.descriptor")
    except EdgecError as exc:
        return f"has an invalid {exc}"
    return None


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    """The manifest of an artifact directory, checked to be edgec's (schema and the keys edgec reads)."""
    path = Path(artifact_dir) / MANIFEST
    try:
        manifest = strict_loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BadInputError(f"artifact: cannot read {path}: {first_line(exc)}") from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise BadInputError(f"artifact: {path} {problem}; compile the artifact again")
    return manifest
