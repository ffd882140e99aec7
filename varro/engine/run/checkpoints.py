"""One checkpoint per day: runs/<run>/checkpoints/<YYYY-MM-DD>/.

A folder holds the adapters, the optimizer and trainer state, the resolved
config and metadata.json, written last into a temporary sibling folder renamed
into place, so a dated folder is complete or absent; `checkpoints/latest` links
the newest complete one. The files and the crash argument: docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from varro.engine.core.config import Config
from varro.engine.store import utc_now
from varro.engine.core.faults import failpoint
from varro.engine.model.loading import lora_parameters
from varro.engine.core.errors import UserError

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
METADATA = "metadata.json"
LATEST = "latest"


class CheckpointError(RuntimeError, UserError):
    pass


@dataclass
class TrainerState:
    step: int
    numpy_rng: dict[str, Any]


def checkpoints_dir(run_path: Path) -> Path:
    return Path(run_path) / "checkpoints"


def list_checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoint folders (metadata present), oldest first."""
    root = checkpoints_dir(run_path)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if DAY_RE.match(p.name) and (p / METADATA).is_file())


class LostCheckpointsError(CheckpointError):
    """A run whose history records checkpoints has none left on disk."""


def require_not_lost(run_path: Path, before_day: str | None) -> None:
    """Raise LostCheckpointsError when runs/<run>/checkpoints holds no checkpoint dated before `before_day`
    but the database of the same home (data/varro.db beside runs/) records that the run wrote some (see
    `store.checkpointed_days`): going on from the base weights would silently throw the run away."""
    from varro.engine import store
    from varro.engine.core.paths import db_path

    run_path = Path(run_path)
    database = db_path(run_path.parents[1])
    if before_day is None or not database.is_file() or find_latest(run_path, before_day) is not None:
        return
    db = store.open_db(database)
    try:
        days = store.checkpointed_days(db, run_path.name, before_day)
    finally:
        db.conn.close()
    if days:
        raise LostCheckpointsError(
            f"run {run_path.name} has {len(days)} days of checkpoints in its history (last {days[-1]}, in "
            f"{database}) but none under {checkpoints_dir(run_path)}: restore that folder, or start over "
            "under a new --run NAME")


def is_complete(run_path: Path, day: str) -> bool:
    """Whether checkpoint `day` of the run exists and is complete (its metadata is written last)."""
    return (checkpoints_dir(run_path) / day / METADATA).is_file()


def find_latest(run_path: Path, before: str | None = None) -> Path | None:
    """The newest complete checkpoint, optionally only those dated strictly before `before`."""
    found = [p for p in list_checkpoints(run_path) if before is None or p.name < before]
    return found[-1] if found else None


def run_config(run_path: Path, fallback: Config) -> Config:
    """The config the run's latest checkpoint was trained with, else `fallback`."""
    found = list_checkpoints(run_path)
    if not found:
        return fallback
    return trained_config(found[-1])


def trained_config(path: Path) -> Config:
    """The config the checkpoint at `path` was trained with."""
    return Config.from_dict(json.loads((Path(path) / "config.json").read_text()))


def resolve_label(run_path: Path, which: str) -> str:
    """'base', 'latest' or a day that has a complete checkpoint; raises CheckpointError otherwise."""
    if which == "base":
        return "base"
    found = [p.name for p in list_checkpoints(run_path)]
    if which == "latest":
        if not found:
            raise CheckpointError(f"run {Path(run_path).name} has no checkpoint yet")
        return found[-1]
    if which not in found:
        raise CheckpointError(f"run {Path(run_path).name} has no checkpoint {which}; it has {found or 'none'}")
    return which


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_path: Path,
    day: str,
    model: nn.Module,
    optimizer,
    step: int,
    numpy_rng: np.random.Generator,
    config: Config,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `day` atomically; returns its folder. Raises CheckpointError if it exists or if a
    weight is NaN or infinite (nothing is written then)."""
    if not DAY_RE.match(day):
        raise CheckpointError(f"checkpoint day must be YYYY-MM-DD, got {day!r}")
    root = checkpoints_dir(run_path)
    final = root / day
    if final.exists():
        raise CheckpointError(f"checkpoint {final} already exists; a day is never trained twice")
    full = config.model.fine_tune == "full"
    weights = dict(tree_flatten(model.parameters() if full else model.trainable_parameters()))
    refuse_non_finite(weights, day)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{day}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    complete = False
    try:
        _save_arrays(tmp / "adapters.safetensors", weights)
        adapter_config = {
            "fine_tune_type": "full" if full else "lora",
            "num_layers": config.model.lora_layers,
            "lora_parameters": lora_parameters(config.model),
            "base_model": config.model.model,
        }
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        failpoint("checkpoint.weights")
        _save_arrays(tmp / "optimizer.safetensors", dict(tree_flatten(optimizer.state)))
        # MLX's key cannot be set directly: draw a seed, reseed with it here and on resume,
        # so a resumed run continues exactly like an uninterrupted one.
        mx_seed = int(mx.random.randint(0, 2**31 - 1, ()).item())
        mx.random.seed(mx_seed)
        state = {
            "step": step,
            "mx_seed": mx_seed,
            "numpy_rng": numpy_rng.bit_generator.state,
            "python_rng": _python_rng_state(),
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        (tmp / "config.json").write_text(config.to_json())
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        for name in files:
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        meta = {"day": day, "step": step, "created_utc": utc_now(), "files": files, **(extra or {})}
        with open(tmp / METADATA, "w") as f:
            f.write(json.dumps(meta, indent=2))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        failpoint("checkpoint.rename")
        os.rename(tmp, final)
        complete = True
        failpoint("checkpoint.renamed")
        _fsync_dir(root)
    except OSError as e:  # any other file of the checkpoint on a full disk: the same message as the weights'
        if complete:
            raise
        raise _write_failed(tmp / Path(e.filename or "a file").name, e, day) from e
    finally:
        if not complete:  # a failed write (full disk, kill, bug) leaves nothing that looks like a checkpoint
            shutil.rmtree(tmp, ignore_errors=True)
    failpoint("checkpoint.latest")
    point_latest(run_path)
    return final


def refuse_non_finite(weights: dict[str, mx.array], day: str) -> None:
    """Raise CheckpointError when any weight is NaN or infinite: such weights would be resumed from every
    later night, so the checkpoint is not written and the previous one stays the run's latest."""
    bad = [name for name, w in weights.items() if not mx.all(mx.isfinite(w)).item()]
    if bad:
        raise CheckpointError(f"checkpoint {day} not written: {len(bad)} of {len(weights)} weight arrays hold NaN "
                              f"or infinite values (first: {bad[0]}); the previous checkpoint is kept")


def point_latest(run_path: Path) -> Path | None:
    """Switch checkpoints/latest atomically to the newest complete checkpoint (removed when there is none);
    returns the folder it names, or None."""
    root = checkpoints_dir(run_path)
    link = root / LATEST
    found = list_checkpoints(run_path)
    if not found:
        if link.is_symlink():
            link.unlink()
        return None
    tmp = root / f"{LATEST}.tmp"
    if tmp.is_symlink() or tmp.exists():  # left by a crash between these two lines
        tmp.unlink()
    os.symlink(found[-1].name, tmp)  # relative: the run folder can move
    if link.is_dir() and not link.is_symlink():  # a copy that followed the link (cp -r): not a checkpoint
        shutil.rmtree(link)
    os.replace(tmp, link)
    _fsync_dir(root)
    return found[-1]


def _save_arrays(path: Path, arrays: dict) -> None:
    """mx.save_safetensors, with a failed write (a full disk, say) turned into a CheckpointError."""
    try:
        mx.save_safetensors(str(path), arrays)
    except (RuntimeError, OSError) as e:  # MLX reports a short write as RuntimeError without an errno
        raise _write_failed(path, e) from e


def _write_failed(path: Path, e: Exception, day: str | None = None) -> "CheckpointError":
    """The error of a checkpoint file that could not be written, with the room left on its disk."""
    free = shutil.disk_usage(path.parent).free / 1e6
    return CheckpointError(f"could not write {path.name} of checkpoint {day or path.parent.name}: {e} "
                           f"({free:.1f} MB free on that disk); the previous checkpoint is untouched")


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _same_model(a: str, b: str) -> bool:
    """Two model ids or folders name the same base (local folders compared by their resolved paths)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_run_owner(run_path: Path, app: str, model: str | None) -> None:
    """Refuse to resume a run that another app wrote, or (unless `model` is None) whose checkpoints sit on
    another base model.

    Raises CheckpointError naming the run's app or base and what to do instead.
    """
    found = list_checkpoints(run_path)
    if not found:
        return
    latest = found[-1]
    meta = json.loads((latest / METADATA).read_text())
    owner = meta.get("app")
    if owner and owner != app:
        raise CheckpointError(f"run {Path(run_path).name} holds {owner} checkpoints (latest {latest.name}): "
                              f"{app} cannot resume it; pick another --run")
    if model is None:
        return
    try:
        base = json.loads((latest / "config.json").read_text())["model"]["model"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {latest} has no readable config.json: {e}") from e
    if not _same_model(base, model):
        raise CheckpointError(f"run {Path(run_path).name} was trained on base model {base!r}; --model {model!r} is "
                              "another base, whose adapters would not fit: pass the run's model or pick another --run")


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check the files against metadata.json; returns the metadata or raises CheckpointError."""
    meta_path = Path(path) / METADATA
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has no readable metadata: {e}") from e
    for name, digest in meta.get("files", {}).items():
        f = Path(path) / name
        if not f.is_file() or _sha256(f) != digest:
            raise CheckpointError(f"checkpoint {path}: {name} is missing or corrupt")
    return meta


def load_into(path: Path, model: nn.Module, optimizer) -> TrainerState:
    """Restore weights, optimizer state and RNGs from checkpoint `path` into a prepared model."""
    verify_checkpoint(path)
    path = Path(path)
    weights = mx.load(str(path / "adapters.safetensors"))
    model.load_weights(list(weights.items()), strict=False)
    opt_state = mx.load(str(path / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(opt_state.items()))
    state = json.loads((path / "trainer_state.json").read_text())
    mx.random.seed(int(state["mx_seed"]))
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    mx.eval(model.parameters(), optimizer.state)
    return TrainerState(step=int(state["step"]), numpy_rng=state["numpy_rng"])


def prune(run_path: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete checkpoints (never the newest); returns the days removed.

    Leftover temporary folders of crashed writes are removed too.
    """
    if keep < 1:
        raise CheckpointError(f"--keep must be at least 1 (the newest checkpoint is never deleted), got {keep}")
    done = list_checkpoints(run_path)
    removed = []
    for p in done[:-keep]:
        # rename first, so a crash mid-delete never leaves a half folder that looks complete
        doomed = p.with_name(f".tmp-delete-{p.name}")
        os.rename(p, doomed)
        shutil.rmtree(doomed)
        removed.append(p.name)
    root = checkpoints_dir(run_path)
    if root.is_dir():
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    point_latest(run_path)  # also repairs a link a crash left one checkpoint behind
    return removed
