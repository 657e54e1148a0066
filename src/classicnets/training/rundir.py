"""A run dir belongs to one run at a time, and what it holds is never lost.

`RunDirLock` is taken atomically (O_CREAT | O_EXCL) before anything is written, holds the PID and host of
its owner and is removed on exit; a lock whose process is gone (same host, PID not alive) is taken over
with a note. So two runs started together can never both write one dir. `check_new_run_dir` refuses a
dir that holds another run's files, and `check_writable` / `check_free_space` find the cheap problems
(read-only, no permission, no room for two checkpoints) before any training.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from classicnets.errors import ClassicNetsError
from classicnets.training import checkpoint
from classicnets.training.memory import format_bytes

LOCK_NAME = ".classicnets.lock"
# Files a run writes: a dir holding any of them belongs to that run.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.toml")
# Errors of a full or read-only disk or a missing permission: said in one line, not as a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class RunDirTaken(ClassicNetsError):
    """The dir belongs to another run: a live one holds its lock, or its files are there."""


class RunDirLock:
    """`acquire()` before a run touches its dir, `release()` after: one run per dir. `note` says when the
    lock of a process that died was taken over. A dir that `acquire` made and the run left empty (it
    stopped at a bad option before writing anything) goes again with the lock, so failed starts do not
    fill runs/ with empty folders."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.note: str | None = None
        self.held = False
        self.made_dir = False

    def acquire(self) -> None:
        self.made_dir = not self.run_dir.exists()
        checkpoint.make_folder(self.run_dir)
        for _ in range(3):  # create, or take over a dead owner's lock and create again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as e:
                raise write_error(e, self.run_dir) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            self.held = True
            return
        raise ClassicNetsError(f"could not take the lock {self.path}: another run keeps taking it; "
                               "run one at a time in this dir")

    def _take_over_if_stale(self) -> None:
        """Return to retry the create (the lock is gone, or its owner is dead and the lock was moved away);
        raise if a live run holds it."""
        owner = read_owner(self.path)
        if owner is None:  # empty: its owner is between creating and writing it (or died right there)
            time.sleep(0.1)
            if not self.path.exists():
                return
            owner = read_owner(self.path)
        if owner is not None:
            pid, host, since = owner
            if host == socket.gethostname() and not pid_alive(pid):
                stale = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
                try:  # atomic: of two runs taking over at once one renames it, and both retry the create
                    os.rename(self.path, stale)
                except FileNotFoundError:
                    return
                stale.unlink(missing_ok=True)
                self.note = f"took over the lock of process {pid}, which ended without releasing it ({since})"
                return
            who = f"process {pid} on {host} since {since}"
        else:
            who = "another run"
        raise RunDirTaken(
            f"{self.run_dir} is in use by {who}: wait for that run, or use another --run-dir / --name "
            f"(if that run is gone, delete {self.path})")

    def release(self) -> None:
        if self.held:
            owner = read_owner(self.path)
            if owner is not None and owner[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
        if self.made_dir:
            self.made_dir = False
            try:
                self.run_dir.rmdir()  # only when empty: a run's files keep it
            except OSError:
                pass


def read_owner(path: Path) -> tuple[int, str, str] | None:
    """(pid, host, since) written in a lock file, or None if it is missing or not written yet."""
    try:
        text = path.read_text(errors="replace").split()
    except OSError:
        return None
    if len(text) < 2 or not text[0].isdigit():
        return None
    return int(text[0]), text[1], " ".join(text[2:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def check_new_run_dir(run_dir: Path) -> None:
    """A new run never writes into a dir that holds another run's files."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        how = (f"resume it with --resume {run_dir}" if "last.pt" in found
               else "delete them to start over there")
        raise RunDirTaken(f"{run_dir} already holds a run ({', '.join(found)}): {how}, "
                          "or pick another --name / --run-dir")


def check_writable(folder: Path) -> None:
    """Write and remove a small file: a read-only disk or a missing permission is found before training."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)  # a kill leaves it to remove_partial_writes
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise write_error(e, folder) from None


def check_free_space(folder: Path, checkpoint_bytes: int) -> None:
    """Room for two checkpoints (last.pt is written beside the old one, then renamed over it)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < 2 * checkpoint_bytes:
        raise ClassicNetsError(
            f"only {format_bytes(free)} free on the disk of {folder}, and a checkpoint of this run takes about "
            f"{format_bytes(checkpoint_bytes)} (two must fit while one is replaced): free some space or "
            "pass --run-dir on another disk")


def write_error(e: OSError, where: Path) -> ClassicNetsError:
    """One line for an OSError while writing under `where` (`checkpoint.write_failure`'s wording)."""
    path = Path(e.filename) if e.filename else where
    return checkpoint.write_failure(path, e) or ClassicNetsError(f"could not write {path}: {e}")


def estimated_checkpoint_bytes(model, optimizer) -> int:
    """The weights, buffers and optimizer state a last.pt holds, plus a little for the rest."""
    tensors = list(model.state_dict().values())
    weights = sum(t.numel() * t.element_size() for t in tensors)
    per_param = {"SGD": 1, "AdamW": 2, "Adam": 2}.get(type(optimizer).__name__, 2)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + per_param * params + 1024 * 1024
