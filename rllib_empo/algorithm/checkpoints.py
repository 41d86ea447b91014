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
every file against it, then reads the whole state into memory, validates it against the
live algorithm (:func:`validate_state`: world, table shapes, networks and their shapes,
finite weights, optimizers, counters, random state, replay buffer) and only then applies
it; should applying fail anyway, the algorithm is put back to a snapshot taken just before
(:func:`apply_or_roll_back`). Checkpoints written before this module existed have no
marker: :func:`mark_complete` adopts one whose save is known to have finished.
"""
from __future__ import annotations

import copy
import ctypes
import json
import logging
import os
import shutil
import uuid
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from rllib_empo.algorithm.nonfinite import nonfinite_arrays

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
SIGNATURE_KEY = "empo_signature"
MAX_LISTED = 6            # shape mismatches listed in an error (then "... and N more")


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


# ------------------------------------------------------------------ validation
def signature(algo) -> dict:
    """What a checkpoint must match to be restored into ``algo``: the world (name and
    env_config), the row shapes, the networks and their sizes."""
    cached = getattr(algo, "_empo_signature", None)
    if cached is not None:
        return cached
    from rllib_empo.algorithm.env import EnvSettings, table_spec, world_for_config
    from rllib_empo.worlds.protocol import world_name
    cfg = algo.config
    world = world_for_config(cfg.env, cfg.env_config)
    env_config = {k: repr(v) for k, v in sorted(dict(cfg.env_config or {}).items())
                  if isinstance(v, (str, int, float, bool, type(None), tuple))}
    sig = {"format": FORMAT, "world": world_name(world), "env": repr(cfg.env),
           "env_config": env_config,
           "table_spec": asdict(table_spec(world, EnvSettings(**cfg.empo_env_settings()))),
           "networks": {n: list(h) for n, h in sorted(cfg.hidden_sizes_by_network().items())
                        if n in algo.schedule.existing_networks}}
    algo._empo_signature = sig
    return sig


def _compare(name: str, saved, live) -> list[str]:
    if saved == live:
        return []
    if isinstance(saved, dict) and isinstance(live, dict):
        diffs = [f"{name}[{k!r}]: checkpoint {saved.get(k, '(none)')!r}, this algorithm "
                 f"{live.get(k, '(none)')!r}" for k in sorted(set(saved) | set(live), key=str)
                 if saved.get(k) != live.get(k)]
        return diffs
    return [f"{name}: checkpoint {saved!r}, this algorithm {live!r}"]


def _weights(state: dict) -> dict:
    return (state.get("learner_group", {}).get("learner", {}).get("rl_module", {}))


def validate_state(algo, state: dict, live: dict) -> None:
    """Raise CheckpointError listing every way ``state`` does not fit ``algo`` (``live`` is
    the algorithm's own current state, taken by ``get_state``)."""
    problems = []
    sig = state.get(SIGNATURE_KEY)
    if sig is not None:
        mine = signature(algo)
        for key in ("world", "env", "env_config", "table_spec", "networks"):
            problems += _compare(key, sig.get(key), mine.get(key))
    saved_modules, live_modules = _weights(state), _weights(live)
    for mid, weights in saved_modules.items():
        if mid not in live_modules:
            problems.append(f"module {mid!r} is not in this algorithm")
            continue
        mine = live_modules[mid]
        if set(weights) != set(mine):
            problems.append(f"networks differ: the checkpoint has "
                            f"{sorted(set(weights) - set(mine))[:6]} that this algorithm lacks "
                            f"and lacks {sorted(set(mine) - set(weights))[:6]}")
        shapes = [f"{key} has shape {np.shape(weights[key])} in the checkpoint, "
                  f"{np.shape(mine[key])} here" for key in sorted(set(weights) & set(mine))
                  if np.shape(weights[key]) != np.shape(mine[key])]
        problems += shapes[:MAX_LISTED]
        if len(shapes) > MAX_LISTED:
            problems.append(f"... and {len(shapes) - MAX_LISTED} more tensors of other shapes")
        bad = nonfinite_arrays(weights)
        if bad:
            problems.append(f"non-finite weights in {', '.join(bad[:5])}")
    problems += _check_optimizers(state, live)
    if "empo_counters" in state:
        problems += _check_counters(algo, state)
    if problems:
        raise CheckpointError("the checkpoint does not fit this algorithm, which is left as it "
                              "was:\n  - " + "\n  - ".join(problems))


def _check_optimizers(state: dict, live: dict) -> list[str]:
    saved = state.get("learner_group", {}).get("learner", {}).get("optimizer")
    mine = live.get("learner_group", {}).get("learner", {}).get("optimizer")
    if saved is None or mine is None:
        return []
    if set(saved) != set(mine):
        return [f"optimizers differ: checkpoint {sorted(saved)}, this algorithm {sorted(mine)}"]
    problems = []
    for name in sorted(saved):
        try:
            a = [len(g["params"]) for g in saved[name]["state"]["param_groups"]]
            b = [len(g["params"]) for g in mine[name]["state"]["param_groups"]]
        except (KeyError, TypeError) as err:
            problems.append(f"optimizer {name!r} has no readable state ({err!r})")
            continue
        if a != b:
            problems.append(f"optimizer {name!r} holds {a} parameters in the checkpoint, {b} here")
    return problems


def _check_counters(algo, state: dict) -> list[str]:
    c, problems = state["empo_counters"], []
    if not isinstance(c, dict):
        return [f"empo_counters is {type(c).__name__}, not a dict"]
    for key in ("num_updates", "num_buffer_clears", "num_env_steps"):
        v = c.get(key)
        if not isinstance(v, (int, np.integer)) or v < 0:
            problems.append(f"empo_counters[{key!r}] is {v!r}, not an int >= 0")
    if not isinstance(c.get("clears_done"), list):
        problems.append(f"empo_counters['clears_done'] is {c.get('clears_done')!r}, not a list")
    if "empo_rng" in state:
        try:
            np.random.default_rng().bit_generator.state = copy.deepcopy(state["empo_rng"])
        except Exception as err:   # noqa: BLE001 -- any failure means a bad generator state
            problems.append(f"empo_rng is not a generator state ({type(err).__name__}: {err})")
    return problems


def apply_or_roll_back(algo, state: dict, prepare: Callable[[dict], Any],
                       apply: Callable[[dict, Any], None]) -> None:
    """Validate ``state`` against a snapshot of ``algo``, ``prepare(state)`` what can be built
    on the side (the replay buffer), then ``apply(state, prepared)``; if applying fails,
    ``apply(snapshot, None)`` puts everything back and CheckpointError says so."""
    snapshot = copy.deepcopy(algo.get_state(not_components=["empo_replay_buffer"]))
    validate_state(algo, state, snapshot)
    try:
        prepared = prepare(state)
    except Exception as err:   # noqa: BLE001 -- the live algorithm is untouched here
        raise CheckpointError(f"the checkpoint's state cannot be loaded ({type(err).__name__}: "
                              f"{err}); the algorithm is left as it was") from err
    kept = getattr(algo, "buffer", None)
    try:
        apply(state, prepared)
    except BaseException as err:
        try:
            apply(snapshot, None)
            algo.buffer = kept
        except Exception as again:   # noqa: BLE001
            raise CheckpointError(
                f"restoring failed ({type(err).__name__}: {err}) and so did rolling back "
                f"({type(again).__name__}: {again}); build a new algorithm") from err
        raise CheckpointError(f"restoring failed ({type(err).__name__}: {err}); the algorithm "
                              "was rolled back to the state it had before") from err


def optional_buffer(make: Callable[[], Any], state: Optional[dict]):
    """A replay buffer filled from ``state`` on the side (None without one)."""
    if state is None:
        return None
    buffer = make()
    buffer.set_state(state)
    return buffer
