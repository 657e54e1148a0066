"""Reading torch files someone else may have written: checkpoints and weights files.

`torch.load(weights_only=True)` refuses pickled code, but what it raises for an empty, truncated, foreign
or exported file is a long traceback. `read_torch_file` turns each of those into one line that names the
file, says what it is, and what to do, in the words of what the file was supposed to be (`Expected`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classicnets.errors import ClassicNetsError


@dataclass(frozen=True)
class Expected:
    """What the file should have been, for the messages: its kind, what to pass instead, how to renew it."""

    what: str = "checkpoint"
    instead: str = "pass a checkpoint written by classicnets train"
    renew: str = "copy it again or pass the run's other checkpoint"
    unsafe: str = "only load checkpoints written by classicnets or plain state_dicts"


CHECKPOINT = Expected()


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, cut to 120 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:120] if lines else type(error).__name__


def read_torch_file(path: Path, map_location: Any = "cpu", expected: Expected = CHECKPOINT,
                    mmap: bool = False) -> Any:
    """torch.load(weights_only=True) of `path`, or one ClassicNetsError line. `mmap`: map a zip file's
    tensors instead of reading them (a 500 MB weights file is not copied into memory twice)."""
    what = expected.what
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ClassicNetsError(f"cannot read {what} {path} ({first_line(e)}); check the file and its "
                               "permissions") from None
    if size == 0:
        raise ClassicNetsError(f"{what} {path} is empty (0 bytes): a write or copy of it was cut off; "
                               f"{expected.renew}")
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise ClassicNetsError(f"{path} is not a torch file (it has neither the zip nor the pickle header "
                               f"torch.save writes); {expected.instead}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols: the error says it all
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and head.startswith(b"PK"))
    except Exception as e:  # noqa: BLE001 - whatever the damaged bytes make torch's reader raise
        unsafe = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(e))
    if unsafe:
        raise ClassicNetsError(
            f"{path} holds Python objects that are unsafe to load ({unsafe.group(1)}, refused by weights_only); "
            f"{expected.unsafe}")
    exported = export_kind(path)
    if exported:
        raise ClassicNetsError(f"{path} is a {exported} export, not a {what}: load it with "
                               f"{'torch.jit.load' if exported == 'TorchScript' else 'torch.export.load'}, or pass "
                               "the checkpoint it was exported from")
    if not head.startswith(b"PK"):
        raise ClassicNetsError(f"{path} is not a readable torch file (a pickle that torch.save did not write, "
                               f"or a damaged one); {expected.instead}")
    try:
        damage = "torch cannot read its contents" if zipfile.is_zipfile(path) else "its zip directory is missing"
    except (OSError, zipfile.BadZipFile):  # Python's zip reader can fail on the damage too
        damage = "its zip directory is damaged"
    raise ClassicNetsError(f"{path} is a damaged torch file ({damage}): it may be truncated; {expected.renew}")


def export_kind(path: Path) -> str | None:
    """"TorchScript" or "pt2" when `path` is one of torch's export archives (which torch.load cannot read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if any(n.endswith(("/constants.pkl", "/code/__torch__.py")) for n in names):
        return "TorchScript"
    if any("/models/" in n or n.endswith("/archive_format") or "serialized_exported_program" in n for n in names):
        return "pt2"
    return None


# --- safetensors ----------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_NAME = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (tensors, metadata). Any malformed file is one ClassicNetsError."""
    path = Path(path)
    if not path.is_file():
        raise ClassicNetsError(f"{path} does not exist: pass a .safetensors file")
    try:
        raw = bytearray(path.read_bytes())
    except OSError as e:
        raise ClassicNetsError(f"cannot read {path} ({(e.strerror or type(e).__name__).lower()}): check the file") from None
    bad = f"{path} is not a safetensors file"
    if len(raw) < 8:
        raise ClassicNetsError(f"{bad} (too short)")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > len(raw) - 8:
        raise ClassicNetsError(f"{bad} (header length {size} exceeds the file)")
    try:
        header = json.loads(raw[8:8 + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ClassicNetsError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ClassicNetsError(f"{bad} (its header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ClassicNetsError(f"{bad} (its __metadata__ is not a map of strings)")
    start = 8 + size
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = _FROM_NAME[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            begin, end = (int(v) for v in entry["data_offsets"])
            if min(shape, default=0) < 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ClassicNetsError(f"{bad} (entry {name!r} is malformed or of an unsupported dtype)") from None
        count = 1
        for s in shape:
            count *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(raw) - start or end - begin != count * itemsize:
            raise ClassicNetsError(f"{bad} (the bytes of {name!r} do not match its shape)")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        data = torch.frombuffer(raw, dtype=torch.uint8, count=end - begin, offset=start + begin)
        tensors[name] = data.view(dtype).reshape(shape).clone()
    return tensors, dict(meta)
