"""Checkpoints that are whole or refused: atomic saves, complete-or-nothing restores.

RLlib 2.60 writes a checkpoint file by file into the target directory and restores it
component by component. A save killed half-way over an older checkpoint leaves a mix of the
two (weights of one run, counters and buffer of the other) that restores without a word,
and a restore that fails half-way (a network of another size, a truncated file) leaves the
live algorithm half-loaded. ``Empo`` routes both through this module:

Saving (:func:`save_atomically`) on a local filesystem writes the checkpoint into a hidden
sibling directory ``.<name>.tmp-<id>``, reads every file back into the completeness marker
:data:`MARKER` (sizes and CRC-32s, written last, files and directories fsynced), and only
then puts the directory in place: an atomic exchange with the old checkpoint
(``renameat2(RENAME_EXCHANGE)`` on Linux) or, where that is missing, two renames. A kill at
any moment leaves either the previous checkpoint intact under ``<name>`` or, in the instant
between the two renames, no ``<name>`` and an error on restore that names the complete
copies beside it. On other filesystems (S3, GCS, ...) the files are written in place and
the marker last, so an interrupted save is refused instead of restored.

Restoring (:func:`read_checkpoint`, then ``Empo.set_state``) first checks the marker and
every file against it and reads the whole state into memory; ``state_checks`` then
validates it against the live algorithm (world, table shapes, networks and their shapes,
finite weights, optimizers, counters, random state, replay buffer) before applying it, and
rolls the algorithm back should applying fail anyway. Checkpoints written before this module
existed have no marker: :func:`mark_complete` adopts one whose save is known to have
finished.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

MARKER = "empo_checkpoint.json"
FORMAT = 1
# What a checkpoint directory may hold at its top level (RLlib's files and components, and
# the marker); a save refuses to replace a directory that holds anything else.
CHECKPOINT_ENTRIES = frozenset({
    "algorithm_state.pkl", "algorithm_state.msgpack", "class_and_ctor_args.pkl",
    "metadata.json", "rllib_checkpoint.json", MARKER, "learner_group", "env_runner",
    "env_to_module_connector", "module_to_env_connector", "eval_env_runner"})
STATE_FILES = ("algorithm_state", "module_state", "state")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged or does not fit this algorithm; the message
    names the directory (or file) and the problem."""


# ------------------------------------------------------------------ saving
def save_atomically(write: Callable[[str, Any], str], path=None, filesystem=None) -> str:
    """Save with ``write(path, filesystem)`` (RLlib's ``save_to_path``) so that ``path`` holds
    either the previous checkpoint or the complete new one (module docstring)."""
    if path is None:
        import tempfile
        path = Path(tempfile.gettempdir()) / f"empo-checkpoint-{uuid.uuid4().hex}"
    text = os.fspath(path)
    if not _is_local(text, filesystem):
        out = write(text, filesystem)
        _write_remote_marker(out if isinstance(out, str) else text, filesystem)
        return out
    final = Path(os.path.abspath(text[len("file://"):] if text.startswith("file://") else text))
    _check_target(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        write(str(tmp), None)
        _write_marker(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _put_in_place(tmp, final)
    _remove_leftovers(final)
    return str(final)


def _is_local(path: str, filesystem) -> bool:
    if filesystem is not None:
        import pyarrow.fs
        return isinstance(filesystem, pyarrow.fs.LocalFileSystem)
    return "://" not in path or path.startswith("file://")


def _check_target(final: Path) -> None:
    if final.exists() and not final.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {final}: it is a file")
    if final.is_dir():
        foreign = sorted(e for e in os.listdir(final) if e not in CHECKPOINT_ENTRIES)
        if foreign:
            raise CheckpointError(
                f"cannot save a checkpoint to {final}: the directory holds entries that are not "
                f"part of a checkpoint ({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}),"
                " which replacing it would delete; save into a new or empty directory, or over "
                "a previous checkpoint")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER)


def _crc(path: Path, fsync: bool = False) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
        if fsync:
            os.fsync(f.fileno())
    return crc


def _manifest(root: Path, fsync: bool) -> dict:
    return {p.relative_to(root).as_posix(): [p.stat().st_size, _crc(p, fsync)]
            for p in _files(root)}


def _write_marker(root: Path) -> None:
    """Read every file back into the marker (fsyncing it), write the marker, fsync the
    directories: after this the directory is a complete checkpoint on disk."""
    marker = {"format": FORMAT, "files": _manifest(root, fsync=True)}
    with open(root / MARKER, "w") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())
    for d in sorted({root, *(p.parent for p in root.rglob("*"))}, reverse=True):
        _fsync_dir(d)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:        # e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_remote_marker(path: str, filesystem) -> None:
    import pyarrow.fs
    if filesystem is None:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(path)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    files = {os.path.relpath(i.path, path): [i.size, None] for i in infos
             if i.type == pyarrow.fs.FileType.File and not i.path.endswith(MARKER)}
    with filesystem.open_output_stream(f"{path.rstrip('/')}/{MARKER}") as f:
        f.write(json.dumps({"format": FORMAT, "files": files}).encode())


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _put_in_place(tmp: Path, final: Path) -> None:
    if final.is_dir() and not os.listdir(final):
        os.rmdir(final)           # an empty directory (Tune makes one) holds nothing to keep
    if not final.exists():
        os.rename(tmp, final)
    elif _exchange(tmp, final):
        shutil.rmtree(tmp)        # it holds the previous checkpoint now
    else:
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)     # a kill between these two renames: see check_complete
        os.rename(tmp, final)
        shutil.rmtree(old)
    _fsync_dir(final.parent)


def _siblings(final: Path, kind: str) -> list[Path]:
    if not final.parent.is_dir():
        return []
    return sorted(final.parent.glob(f".{final.name}.{kind}-*"))


def _remove_leftovers(final: Path) -> None:
    """Directories that killed saves of ``final`` left behind."""
    for d in _siblings(final, "tmp") + _siblings(final, "old"):
        shutil.rmtree(d, ignore_errors=True)


def mark_complete(path) -> str:
    """Write the completeness marker into a checkpoint directory saved without one (by an
    earlier version of rllib_empo), so that it can be restored. Only for a checkpoint whose
    save is known to have finished: the marker vouches for the files as they are."""
    root = Path(path)
    if not (root / "algorithm_state.pkl").is_file() and not (root / "algorithm_state.msgpack").is_file():
        raise CheckpointError(f"{root} is not an algorithm checkpoint (no algorithm_state file)")
    _write_marker(root)
    return str(root)


# ------------------------------------------------------------------ reading
def check_complete(path) -> dict:
    """The marker of checkpoint ``path``, after checking every file against it. Raises
    CheckpointError naming the directory (or file) when the checkpoint is missing,
    incomplete or damaged."""
    root = Path(os.fspath(path))
    if not root.is_dir():
        done = [d for d in _siblings(root, "old") + _siblings(root, "tmp") if (d / MARKER).is_file()]
        hint = ""
        if done:
            hint = (" A save of it was interrupted while it replaced the previous checkpoint; "
                    f"complete copies are at {', '.join(map(str, done))} ('.old-' is the "
                    f"previous one, '.tmp-' the new one): rename one of them to {root.name}")
        raise CheckpointError(f"checkpoint directory {root} does not exist.{hint}")
    marker_path = root / MARKER
    if not marker_path.is_file():
        raise CheckpointError(
            f"{root} is not a complete EMPO checkpoint: it has no {MARKER}, which a save "
            "writes last, so its save was interrupted (or it was written by an rllib_empo "
            "without atomic checkpoints; if its save is known to have finished, adopt it with "
            "rllib_empo.algorithm.checkpoints.mark_complete(path))")
    try:
        marker = json.loads(marker_path.read_text())
        files = dict(marker["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{marker_path} is damaged ({err})") from err
    for rel, (size, crc) in files.items():
        p = root / rel
        if not p.is_file():
            raise CheckpointError(f"checkpoint {root} is damaged: {rel} is missing")
        if p.stat().st_size != size:
            raise CheckpointError(f"checkpoint {root} is damaged: {rel} has {p.stat().st_size} "
                                  f"bytes, the save wrote {size}")
        if crc is not None and _crc(p) != crc:
            raise CheckpointError(f"checkpoint {root} is damaged: {rel} differs from what the "
                                  "save wrote (CRC-32 mismatch)")
    return marker


def read_checkpoint(path) -> dict:
    """The complete state of checkpoint ``path`` (every component), as ``get_state`` gives
    it, after :func:`check_complete`; nothing of a live algorithm is touched."""
    check_complete(path)
    return _read_dir(Path(os.fspath(path)))


def _read_dir(d: Path) -> dict:
    """A Checkpointable directory: its state file, with each sub-directory (a component)
    read into the key of its name, which is how ``get_state`` nests components."""
    files = [d / f"{name}{ext}" for name in STATE_FILES for ext in (".pkl", ".msgpack")
             if (d / f"{name}{ext}").is_file()]
    if len(files) != 1:
        raise CheckpointError(f"checkpoint directory {d} has {len(files)} state files "
                              f"({', '.join(f.name for f in files) or 'none'}), expected one")
    try:
        with open(files[0], "rb") as f:
            if files[0].suffix == ".msgpack":
                from ray.rllib.utils.checkpoints import try_import_msgpack
                state = try_import_msgpack(error=True).load(f, strict_map_key=False)
            else:
                from ray import cloudpickle      # what RLlib writes them with
                state = cloudpickle.load(f)
    except Exception as err:   # noqa: BLE001 -- any unpickling failure means a bad file
        raise CheckpointError(f"cannot read {files[0]}: {type(err).__name__}: {err}") from err
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        state[sub.name] = _read_dir(sub)
    return state
