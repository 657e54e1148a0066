"""What a command may write to: never one of its inputs, never a checkpoint.

`check_output` runs before any work, so `classicnets eval CKPT --out CKPT` or `classicnets export CKPT
--out CKPT` is one line and the checkpoint is untouched. Paths are compared resolved (relative paths,
`..`, symlinks) and by inode (hard links). The write itself goes through `checkpoint.atomic_write`.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from classicnets.errors import ClassicNetsError
from classicnets.training.checkpoint import FORMAT, file_in_the_way


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode (hard links)."""
    with contextlib.suppress(OSError, ValueError):
        if os.path.samefile(a, b):
            return True
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a classicnets checkpoint (read from its pickle, without loading the weights)."""
    try:
        if not Path(path).is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith("/data.pkl") and info.file_size < 2**26:
                    return FORMAT.encode() in archive.read(info)
    except Exception:  # noqa: BLE001 - any damage: then it is no checkpoint worth keeping from being overwritten
        return False
    return False


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *, flag: str = "--out",
                 replaces: bytes | None = None) -> Path:
    """Refuse an output that is one of the inputs (also through a symlink or a hard link), a folder, below a
    file, a device or pipe, or an existing classicnets checkpoint; returns `out` as a Path. An existing file
    is replaced only when it holds the `replaces` marker near its start or end (a previous output of the
    same command); any other file is someone's data and is refused."""
    if not str(out).strip():
        raise ClassicNetsError(f"{flag} is empty: pass a file path")
    out = Path(out)
    for source in inputs:
        if same_file(out, source):
            raise ClassicNetsError(f"{flag} {out} is the input {source}: writing there would destroy it; "
                                   f"pass another {flag} path")
    if out.is_dir():
        raise ClassicNetsError(f"{flag} {out} is a folder: pass a file path such as {out / 'out'}")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ClassicNetsError(f"{flag} {out} cannot be written: {blocker} is a file, not a folder; "
                               "choose another path")
    if out.exists() and not out.is_file():
        raise ClassicNetsError(f"{flag} {out} is not a regular file (a device, pipe or socket): pass a file path")
    if is_checkpoint(out):
        raise ClassicNetsError(f"{flag} {out} is a classicnets checkpoint: writing there would destroy it; "
                               f"pass another {flag} path")
    if out.is_file() and not (replaces is not None and holds_marker(out, replaces)):
        raise ClassicNetsError(f"{flag} {out} already exists and is not an earlier output of this command: "
                               f"pass another {flag} path, or delete the file first")
    return out


def holds_marker(path: Path, marker: bytes, span: int = 4 * 2**20) -> bool:
    """Whether `marker` is in the first or last `span` bytes of the file (where our outputs keep their
    metadata: a JSON key, a safetensors header, a zip's file list, ONNX's metadata)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(span)
            if marker in head:
                return True
            if size > span:
                f.seek(max(span, size - span))
                return marker in f.read(span)
    except OSError:
        return False
    return False
