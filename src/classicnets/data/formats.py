"""Readers for the published on-disk formats: IDX (the MNIST family) and CIFAR's python batches.

Each reader checks the structure it relies on and turns any problem into one `ClassicNetsError` that
names the file and ends with `fix` (supplied by the caller, because the fix depends on where the file
came from: a system package is reinstalled, a user file is fetched again).
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from classicnets.errors import ClassicNetsError

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

CIFAR_SIDE = 32  # CIFAR rows hold 3 planes of 32x32 bytes: R, G, B


def read_file_bytes(path: Path, fix: str) -> bytes:
    """The file's content, decompressed when it ends in .gz; a truncated or corrupt archive is an error."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ClassicNetsError(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ClassicNetsError(f"{path} is a truncated gzip archive (it ends early); {fix}") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise ClassicNetsError(f"{path} is not a valid gzip archive ({e}); {fix}") from None


def parse_idx(data: bytes, path: Path, magic: int, fix: str) -> np.ndarray:
    """An IDX byte array (images N×rows×cols or labels N) as a read-only numpy view of `data`."""
    kind = "image" if magic == IDX_IMAGES_MAGIC else "label"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ClassicNetsError(
            f"{path} is too short for an IDX {kind} file ({len(data)} bytes, header needs {header}); {fix}"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ClassicNetsError(
            f"{path} is not an IDX {kind} file (magic number 0x{found:08x}, expected 0x{magic:08x}); {fix}"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    body = len(data) - header
    if body != expected:
        shape = "x".join(map(str, dims))
        what = "truncated" if body < expected else "has trailing bytes"
        raise ClassicNetsError(
            f"{path} is {what}: its header promises {shape} = {expected} bytes of {kind}s "
            f"but it holds {body}; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays, nothing else.

    CIFAR's python version is pickled; a pickle can run arbitrary code, so anything beyond the numpy
    array machinery is refused (the file cannot be CIFAR then anyway).
    """

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed numpy.core
            module = "numpy._core." + module.split(".", 2)[2]
        return super().find_class(module, name)


def read_pickle(data: bytes, path: Path, fix: str) -> dict:
    """A CIFAR pickle as a dict with str keys (the files were written by Python 2: latin-1 strings)."""
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ClassicNetsError(f"{path} is not a CIFAR python batch (cannot unpickle: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise ClassicNetsError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}); {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def parse_cifar_batch(data: bytes, path: Path, label_key: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images N×3×32×32 uint8 and labels N (int64) of one CIFAR batch file."""
    batch = read_pickle(data, path, fix)
    for key in ("data", label_key):
        if key not in batch:
            raise ClassicNetsError(f"{path} lacks the '{key}' entry of a CIFAR batch; {fix}")
    images = batch["data"]
    row = 3 * CIFAR_SIDE * CIFAR_SIDE
    is_rows = isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
    if not is_rows or images.shape[1] != row:
        shape = getattr(images, "shape", None)
        raise ClassicNetsError(f"{path}: 'data' must be a uint8 array N×{row}, got {shape}; {fix}")
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ClassicNetsError(f"{path} holds {len(images)} images but {len(labels)} labels; {fix}")
    return images.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels


def parse_cifar_meta(data: bytes, path: Path, names_key: str, fix: str) -> list[str]:
    """The class names a CIFAR meta file lists."""
    meta = read_pickle(data, path, fix)
    names = meta.get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise ClassicNetsError(f"{path} lacks the list '{names_key}' of a CIFAR meta file; {fix}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def check_labels(labels: np.ndarray, num_classes: int, path: Path, fix: str) -> None:
    """Every label must name a class; a stray value would otherwise crash training much later."""
    if len(labels) == 0:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise ClassicNetsError(
            f"{path}: label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} "
            f"({len(bad)} such labels); {fix}"
        )
