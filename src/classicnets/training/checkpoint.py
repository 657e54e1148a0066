"""Checkpoints: the unit of safety.

A checkpoint is one `torch.save`d dict, written atomically (temp file in the same folder, fsync,
rename) so a kill at any moment leaves either the old file or the new one, never half of one. It is
loaded with `weights_only=True`, so a file carrying a pickled payload is refused instead of run.

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

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classicnets.errors import ClassicNetsError
from classicnets.models import load_weights
from classicnets.models.registry import create_model

FORMAT = "classicnets.checkpoint"
VERSION = 1


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every filesystem allows opening a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a classicnets checkpoint safely, or raise one clear ClassicNetsError."""
    path = Path(path)
    if path.is_dir():  # a run dir: take its last checkpoint
        path = path / "last.pt"
    if not path.is_file():
        raise ClassicNetsError(f"checkpoint {path} does not exist; pass a .pt file or a run dir holding last.pt")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ClassicNetsError(
            f"{path} holds Python objects that are unsafe to load (weights_only refused: "
            f"{str(e).splitlines()[0][:120]}); only load checkpoints written by classicnets or plain state_dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ClassicNetsError(
            f"{path} is not a readable checkpoint ({str(e).splitlines()[0][:120]}); "
            "it may be truncated or not a torch file"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = (
            "it looks like a bare state_dict: load it with create_model(...).load_state_dict()"
            if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
            else "it was not written by classicnets"
        )
        raise ClassicNetsError(f"{path} is not a classicnets checkpoint; {hint}")
    if obj.get("version", 0) > VERSION:
        raise ClassicNetsError(
            f"{path} was written by a newer classicnets (checkpoint version {obj['version']}); upgrade classicnets"
        )
    return obj


def build_model(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the net a checkpoint describes and load its weights (eval mode)."""
    model = create_model(ckpt["model_name"], **ckpt.get("model_kwargs", {}))
    load_weights(model, ckpt["model"])
    return model.eval()


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
