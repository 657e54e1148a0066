"""Checkpoints: the unit of safety.

A checkpoint is one `torch.save`d dict, written atomically (`atomic_write`: temp file in the same folder,
fsync, rename) so a kill leaves the old file or the new one, never half of one; a failed write (full
disk, read-only folder) removes its temp file, keeps the old file and is one ClassicNetsError line.
`remove_partial_writes` deletes the temp files of killed writes (`paths.check_output` keeps a command's
output off its inputs and off checkpoints). Loading uses `weights_only=True` (a pickled payload is refused,
not run), then `check` runs before any net is built: keys and types, the model name, options in sane
ranges, and the tensors against the net built on the meta device (no memory), so a damaged or edited file
is one line, never a traceback or a 300 GB allocation; `for_resume=True` also checks the training state.

Keys (all plain data: tensors, numbers, strings, lists, dicts):
    format, version          -- FORMAT / VERSION below; anything else is "not ours"
    model_name, model_kwargs -- enough to rebuild the net with `create_model`
    model                    -- the state_dict
    data                     -- {name, classes, in_channels, input_size, resize, mean, std}: what eval
                                needs (`resize` is the test scale of scale-jittered runs; std None means
                                mean subtraction only)
    config                   -- the resolved TrainConfig as a dict
    epoch, step, metrics     -- progress
    optimizer, scheduler, scaler -- training state, present in resumable checkpoints
    rng, loader              -- lists with one entry per rank (RNG states as tensors; loader positions)
    progress                 -- micro-batch, accumulation steps, world size, running epoch sums, best
                                accuracy and elapsed time, so a resumed epoch reports as if never stopped
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classicnets.errors import ClassicNetsError
from classicnets.files import first_line, read_torch_file
from classicnets.models import load_weights, unwrap_state_dict
from classicnets.models.registry import create_model, get_entry
from classicnets.training.memory import format_bytes

FORMAT = "classicnets.checkpoint"
VERSION = 1
# The temp files of `atomic_write`: ".NAME.XXXXXXXX.tmp" (+ the suffix of NAME, which some writers check).
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
MAX_CLASS_NAME = 1000  # characters; a folder name is at most 255 bytes
DAMAGED = "the file is damaged or was edited: use a checkpoint written by classicnets train"
# Sane ranges of the options a checkpoint may carry, checked before a net is built even on the meta device.
OPTION_RANGES = {"num_classes": (1, 1_000_000), "in_channels": (1, 1024), "input_size": (1, 16384),
                 "width": (0, 64)}
INFERENCE_KEYS = {"model_name": str, "model_kwargs": dict, "model": dict}
RESUME_KEYS = {"config": dict, "optimizer": dict, "scheduler": dict, "progress": dict, "rng": list,
               "loader": list, "metrics": list}


# --- writing ----------------------------------------------------------------------------------------------

class WriteError(ClassicNetsError, OSError):
    """A write the disk or the folder refused: one line for the user (str), and still an OSError with
    errno and filename for a caller that adds its own advice (the trainer: how to resume)."""

    def __init__(self, code: int, message: str, filename: str):
        super().__init__(code, os.strerror(code), filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically; returns the path. A failed write is one ClassicNetsError
    ("could not write PATH: no space left on device ..."), with the previous file intact."""
    payload = {"format": FORMAT, "version": VERSION, **payload}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    return atomic_write(path, write, keep_suffix=False)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, keep_suffix: bool = True) -> Path:
    """write(temp path in the same folder), fsync, rename onto `path`: readers see the old file or the new
    one. Any failure removes the temp file; one that the disk or folder caused (full, read-only, a path
    part that is a file) becomes one ClassicNetsError naming `path` and the fix. `keep_suffix` ends the
    temp name with path's suffix too (torch.export checks it)."""
    path = Path(path)
    make_folder(path.parent, for_file=path)
    if path.is_dir():
        raise ClassicNetsError(f"could not write {path}: it is a folder; pass a file path such as {path / 'out'}")
    existed = path.is_file()
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else ""),
                                    dir=path.parent)
    except OSError as e:
        raise _failure(path, e, existed) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        failure = write_failure(path, e, existed) if isinstance(e, Exception) else None
        if failure is None:
            raise
        raise failure from None
    _fsync_dir(path.parent)
    return path


def make_folder(folder: Path, *, for_file: Path | None = None) -> None:
    """mkdir -p, or one ClassicNetsError naming the path part that is in the way."""
    if folder.exists() and not folder.is_dir():
        raise ClassicNetsError(f"could not write {for_file or folder}: {folder} is a file, not a folder; "
                               "choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _failure(for_file or folder, e, False) from None


def _failure(path: Path, error: OSError, existed: bool) -> ClassicNetsError:
    return write_failure(path, error, existed) or WriteError(
        errno.EIO, f"could not write {path} ({first_line(error)}); check the folder and retry", str(path))


def write_failure(path: Path, error: BaseException, existed: bool = False) -> WriteError | None:
    """The one line for a write that the disk or the folder refused, or None when `error` is not one
    (a bug, which keeps its traceback)."""
    cause: BaseException | None = error
    seen = 0
    while cause is not None and not isinstance(cause, OSError) and seen < 8:
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    if isinstance(cause, OSError) and cause.errno is not None:
        code = cause.errno
    elif isinstance(error, RuntimeError) and re.search(
            r"inline_container|PytorchStreamWriter|file write failed|iostream error|unexpected pos", str(error)):
        code = errno.ENOSPC if _free_bytes(path) < 2**20 else errno.EIO  # torch's writer lost the OSError
    else:
        return None
    free = _free_bytes(path)
    fixes = {
        errno.ENOSPC: f"no space left on device (only {format_bytes(free)} free); free space there or write elsewhere",
        errno.EDQUOT: "disk quota exceeded; free space there or write elsewhere",
        errno.EROFS: "the file system is read-only; write to another folder",
        errno.EACCES: "permission denied; write to a folder you may write to",
        errno.EISDIR: "it is a folder; pass a file path",
    }
    blocker = file_in_the_way(path)
    if code in (errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        reason = f"{blocker} is a file, not a folder; choose another path"
    else:
        reason = fixes.get(code, f"{os.strerror(code).lower()}; check the folder and retry")
    kept = f"; the previous {path.name} is intact" if existed and path.is_file() else ""
    return WriteError(code, f"could not write {path}: {reason}{kept}", str(path))


def file_in_the_way(path: Path) -> Path | None:
    """The first part of `path` that exists but is a file, so nothing can be created below it."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _free_bytes(path: Path) -> int:
    for folder in (path.parent, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return 0


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that writes into `folder` left when their process was killed (".NAME.*.tmp");
    returns what was removed. Call it when no write into that folder is in progress."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # make the rename durable; not every filesystem opens a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def input_file(path: str | os.PathLike) -> Path:
    """The file a checkpoint argument names: itself, or a run dir's last.pt."""
    path = Path(path)
    return path / "last.pt" if path.is_dir() else path


# --- reading ----------------------------------------------------------------------------------------------

def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
         for_resume: bool = False) -> dict[str, Any]:
    """Load a classicnets checkpoint safely and `check` it (`for_resume`: its training state too), or
    raise one clear ClassicNetsError. A run dir means its last.pt."""
    path = input_file(path)
    if not path.is_file():
        what = "is not a regular file (a device or pipe)" if path.exists() else "does not exist"
        raise ClassicNetsError(f"checkpoint {path} {what}; pass a .pt file or a run dir holding last.pt")
    obj = read_torch_file(path, map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        bare = isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
        hint = ("it looks like a bare state_dict: load it with create_model(...).load_state_dict()" if bare
                else "it was not written by classicnets")
        raise ClassicNetsError(f"{path} is not a classicnets checkpoint; {hint}")
    version = obj.get("version", 0)
    if not _whole(version):
        raise ClassicNetsError(f"{path} has no valid checkpoint version ({_show(version)}); {DAMAGED}")
    if version > VERSION:
        raise ClassicNetsError(f"{path} was written by a newer classicnets (checkpoint version {version}); "
                               "upgrade classicnets")
    return check(obj, path, for_resume=for_resume)


def _show(value: Any, limit: int = 60) -> str:
    """A value from the file for a one-line message: repr (escapes newlines), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check(ckpt: Any, path: str | os.PathLike | None = None, *, for_resume: bool = False) -> dict[str, Any]:
    """Check a loaded checkpoint before any net is built; returns it, or raises one ClassicNetsError naming
    the file, the first problem and the fix. Inference needs model_name (a registered net), model_kwargs
    (in OPTION_RANGES) and model (tensors with the keys and shapes of the net those build on the meta
    device); data, config, epoch, step and metrics are optional but typed. `for_resume`: the training state
    too (RESUME_KEYS, one RNG state and loader position per rank, optimizer state matching the net)."""
    where = str(path) if path is not None else "the checkpoint"
    if not isinstance(ckpt, dict):
        raise ClassicNetsError(f"{where} is not a classicnets checkpoint (it holds a {type(ckpt).__name__})")
    _require(ckpt, where, INFERENCE_KEYS, "the net")
    net = _meta_net(ckpt, where)
    _compare_weights(net, ckpt, where)
    _check_data(ckpt.get("data"), net, where)
    for key, kind in (("config", dict), ("metrics", list), ("epoch", int), ("step", int)):
        value = ckpt.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ClassicNetsError(f"{where}: {key!r} is a {type(value).__name__}, not a {kind.__name__}; "
                                   f"{DAMAGED}")
    if for_resume:
        _check_training_state(ckpt, where, net)
    return ckpt


def require_resumable(ckpt: dict[str, Any], path: str | os.PathLike | None = None) -> dict[str, Any]:
    """`check(ckpt, path, for_resume=True)`; best.pt (no training state) is refused with the fix: resume
    from the run dir (its last.pt)."""
    return check(ckpt, path, for_resume=True)


def _require(ckpt: dict, where: str, spec: dict[str, type], what: str) -> None:
    for key, kind in spec.items():
        if key not in ckpt:
            raise ClassicNetsError(f"{where} lacks {key!r} ({what}); {DAMAGED}")
        if not isinstance(ckpt[key], kind):
            raise ClassicNetsError(
                f"{where}: {key!r} is a {type(ckpt[key]).__name__}, not a {kind.__name__}; {DAMAGED}")


def _meta_net(ckpt: dict, where: str) -> torch.nn.Module:
    """The net model_name and model_kwargs describe, built on the meta device (no memory, no time)."""
    name, kwargs = ckpt["model_name"], ckpt["model_kwargs"]
    try:
        get_entry(name)
    except ClassicNetsError:
        raise ClassicNetsError(f"{where} holds an unknown model {_show(name)}: it was written by another "
                               "classicnets or damaged; classicnets list shows the known models") from None
    for key, value in kwargs.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (bool, int, float, str))):
            raise ClassicNetsError(f"{where}: model_kwargs holds {_show(key)}: {type(value).__name__}; {DAMAGED}")
        if key in OPTION_RANGES:
            low, high = OPTION_RANGES[key]
            if key == "width":
                fits, kind = _number(value) and low < value <= high, "a number"
            else:
                fits, kind = _whole(value, low, high), "an integer"
            if not fits:
                raise ClassicNetsError(f"{where}: model_kwargs {key} must be {kind} in {low}..{high}, not "
                                       f"{_show(value)}; {DAMAGED}")
    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - the builders' own checks, or a type the file should not hold
        raise ClassicNetsError(f"{where}: its model_kwargs do not build {name} ({first_line(e)}); "
                               f"{DAMAGED}") from None


def _compare_weights(net: torch.nn.Module, ckpt: dict, where: str) -> None:
    name, stored = ckpt["model_name"], ckpt["model"]
    for key, value in stored.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ClassicNetsError(f"{where}: the weights hold {_show(key)}: {type(value).__name__}, "
                                   f"not a tensor; {DAMAGED}")
        if (value.layout != torch.strided or value.is_meta or value.is_quantized or value.is_complex()
                or value.nbytes > value.untyped_storage().nbytes()):
            raise ClassicNetsError(f"{where}: the weights' {_show(key)} is not a plain stored tensor; {DAMAGED}")
    stored = unwrap_state_dict(stored)
    expected = net.state_dict()
    described = sum(t.numel() for t in expected.values())
    held = sum(t.numel() for t in stored.values())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in stored.values() if t.numel()}
    if described > 16 * held + 2**20:  # far more: say so, not which of the many tensors differs first
        raise ClassicNetsError(
            f"{where}: model_kwargs {_show(ckpt['model_kwargs'], 200)} describe a {name} of {described:,} "
            f"weights but the file holds {held:,}; {DAMAGED}")
    if sum(t.nbytes for t in stored.values()) > 2 * sum(storages.values()) + 2**20:
        raise ClassicNetsError(f"{where}: the weights are views of far fewer stored bytes; {DAMAGED}")
    for key, tensor in expected.items():
        if key not in stored:
            raise ClassicNetsError(f"{where}: the weights lack {key!r}, which {name} has; {DAMAGED}")
        have = stored[key]
        if tuple(have.shape) != tuple(tensor.shape):
            raise ClassicNetsError(
                f"{where}: the weights' {key!r} has shape {tuple(have.shape)} but {name} with model_kwargs "
                f"{_show(ckpt['model_kwargs'], 200)} has {tuple(tensor.shape)}; {DAMAGED}")
        if have.is_floating_point() != tensor.is_floating_point():
            raise ClassicNetsError(f"{where}: the weights' {key!r} is {have.dtype}, {name}'s is {tensor.dtype}; "
                                   f"{DAMAGED}")
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise ClassicNetsError(f"{where}: the weights' {key!r} hold NaN or infinity: the run diverged before "
                                   "they were saved, or the file is damaged; use an earlier checkpoint")
    for key in stored:
        if key not in expected:
            raise ClassicNetsError(f"{where}: the weights have {_show(key)}, which {name} lacks; {DAMAGED}")


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> bool:  # a finite one
    return _real(value) and math.isfinite(value)


def _whole(value: Any, low: int = 0, high: int = 2**62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_data(data: Any, net: torch.nn.Module, where: str) -> None:
    """The data record eval and predict read: class names, channels, sizes, normalisation."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise ClassicNetsError(f"{where}: 'data' is a {type(data).__name__}, not a dict; {DAMAGED}")

    def bad(key: str, wanted: str) -> ClassicNetsError:
        return ClassicNetsError(f"{where}: data {key}={_show(data[key])} is not {wanted}; {DAMAGED}")

    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != net.num_classes
                                or not all(isinstance(c, str) and len(c) <= MAX_CLASS_NAME for c in classes)):
        raise bad("classes", f"a list of {net.num_classes} names, one per output of the net")
    if data.get("in_channels") is not None and not _whole(data["in_channels"], net.in_channels, net.in_channels):
        raise bad("in_channels", f"{net.in_channels}, the net's input channels")
    for key in ("input_size", "resize"):
        if data.get(key) is not None and not _whole(data[key], 1, OPTION_RANGES["input_size"][1]):
            raise bad(key, f"a size in 1..{OPTION_RANGES['input_size'][1]}")
    for key in ("mean", "std"):
        value = data.get(key)
        if value is None:
            continue
        if (not isinstance(value, list) or len(value) not in (1, net.in_channels) or not all(map(_number, value))
                or (key == "std" and not all(v > 0 for v in value))):
            counts = "1" if net.in_channels == 1 else f"1 or {net.in_channels}"
            raise bad(key, f"a list of {counts} {'positive ' if key == 'std' else ''}numbers")
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise bad("name", "a data set name")


def _check_training_state(ckpt: dict, where: str, net: torch.nn.Module) -> None:
    missing = [key for key in RESUME_KEYS if key not in ckpt]
    if missing:
        folder = Path(where).parent
        what = "holds the best weights, for eval, and no training state" if Path(where).name == "best.pt" else (
            f"has no training state (it lacks {', '.join(missing)})")
        raise ClassicNetsError(f"{where} {what}: resume from the run dir {folder} (its last.pt)")
    _require(ckpt, where, RESUME_KEYS, "training state")

    def damaged(detail: str) -> ClassicNetsError:
        return ClassicNetsError(f"{where} cannot be resumed: {detail}; {DAMAGED}")

    config, kwargs = ckpt["config"], ckpt["model_kwargs"]
    model = str(config.get("model")).strip().lower().replace("-", "_")
    if model != ckpt["model_name"].strip().lower().replace("-", "_"):
        raise damaged(f"its config trains {_show(config.get('model'))} but its weights are {ckpt['model_name']}")
    for key in ("width", "dropout", "head", "init"):
        if config.get(key) is not None and key in kwargs and config[key] != kwargs[key]:
            raise damaged(f"its config has {key}={_show(config[key])} but its weights were built with "
                          f"{_show(kwargs[key])}")
    progress = ckpt["progress"]
    for key in ("world_size", "micro_batch", "accum_steps"):
        if not _whole(progress.get(key), 1, 2**20):
            raise damaged(f"progress {key}={_show(progress.get(key))} is not a positive integer")
    for key, value in progress.items():
        if value is not None and not _real(value):
            raise damaged(f"progress {_show(key)}={_show(value)} is not a number")
    world = progress["world_size"]
    if len(ckpt["rng"]) != world or len(ckpt["loader"]) != world:
        raise damaged(f"it has {len(ckpt['rng'])} RNG states and {len(ckpt['loader'])} loader positions for "
                      f"{world} processes")
    for state in ckpt["rng"]:
        _check_rng(state, damaged)
    for position in ckpt["loader"]:
        if not isinstance(position, dict) or not all(_whole(position.get(k)) for k in ("epoch", "batch")):
            raise damaged("a loader position is not {epoch, batch}")
    scheduler = ckpt["scheduler"]
    if not all(_real(scheduler.get(k)) for k in ("step", "scale", "best", "bad_epochs", "drops")):
        raise damaged("its scheduler state is not {step, scale, best, bad_epochs, drops}")
    if not all(isinstance(record, dict) for record in ckpt["metrics"]):
        raise damaged("its metrics are not a list of records")
    if ckpt.get("scaler") is not None and not isinstance(ckpt["scaler"], dict):
        raise damaged("its grad scaler state is not a dict")
    _check_optimizer(ckpt["optimizer"], [tuple(p.shape) for p in net.parameters()], damaged)


def _check_rng(state: Any, damaged: Callable[[str], ClassicNetsError]) -> None:
    cpu, state = torch.get_rng_state(), state if isinstance(state, dict) else {}
    python, numpy_state = state.get("python"), state.get("numpy")
    internal = python.get("internal") if isinstance(python, dict) else None
    mine = state.get("torch")
    if not isinstance(mine, torch.Tensor) or mine.dtype != cpu.dtype or mine.shape != cpu.shape:
        raise damaged("an RNG state lacks torch's generator state")
    if (not isinstance(internal, list) or len(internal) != 625 or not all(_whole(v, 0, 2**32) for v in internal)
            or internal[-1] > 624 or not _whole(python.get("version"))
            or not (python.get("gauss") is None or _number(python.get("gauss")))):
        raise damaged("its Python RNG state is not Mersenne Twister's")
    if numpy_state is not None:
        keys = numpy_state.get("keys") if isinstance(numpy_state, dict) else None
        if (not isinstance(keys, torch.Tensor) or keys.shape != (624,) or keys.is_floating_point()
                or numpy_state.get("kind") != "MT19937" or not _whole(numpy_state.get("pos"), 0, 624)
                or not _whole(numpy_state.get("has_gauss"), 0, 1) or not _number(numpy_state.get("cached"))):
            raise damaged("its numpy RNG state is not Mersenne Twister's")
    if state.get("cuda") is not None and getattr(state["cuda"], "dtype", None) != torch.uint8:
        raise damaged("its CUDA RNG state is not a byte tensor")


def _check_optimizer(optimizer: dict, shapes: list[tuple[int, ...]],
                     damaged: Callable[[str], ClassicNetsError]) -> None:
    groups, state = optimizer.get("param_groups"), optimizer.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise damaged("its optimizer state is not {state, param_groups}")
    indices = [i for g in groups for i in g["params"]]
    if not all(_whole(i) for i in indices) or sorted(indices) != list(range(len(shapes))):
        raise damaged(f"its optimizer holds {len(indices)} parameters, the net {len(shapes)}")
    for index, entry in state.items():
        if not _whole(index, 0, len(shapes) - 1) or not isinstance(entry, dict):
            raise damaged(f"its optimizer state has an entry for parameter {_show(index)}, which the net lacks")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() and tuple(value.shape) != shapes[index]:
                raise damaged(f"the optimizer's {key} of parameter {index} has shape {tuple(value.shape)}, "
                              f"the parameter {shapes[index]}")


def build_model(ckpt: dict[str, Any], path: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild the net a checkpoint describes and load its weights (eval mode); built for real only
    after `check` compared the weights with the net on the meta device."""
    check(ckpt, path)
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    load_weights(model, ckpt["model"])
    return model.eval()


# --- random generator states ------------------------------------------------------------------------------

def rng_state(device: torch.device) -> dict[str, Any]:
    """Python's, numpy's, torch's (and the GPU's) generator states as tensors and plain lists, so a
    checkpoint holding them loads with weights_only=True."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
