"""Readers for the published on-disk formats: IDX (the MNIST family) and CIFAR's python batches.

Each reader checks the structure it relies on and turns any problem into one `ClassicNetsError` that
names the file and ends with `fix` (supplied by the caller, because the fix depends on where the file
came from: a system package is reinstalled, a user file is fetched again).

No size a file states is trusted before it is checked: an IDX header's dimensions are bounded and must
match the file's length, and a .gz is decompressed to at most the bytes its header promises plus one;
a CIFAR pickle is walked opcode by opcode (bounded count, memo indices in order) before it is unpickled,
and its numpy arrays are rebuilt here from bytes that are really in the file. So a damaged or hostile
file costs no more memory than a good one of its size.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import pickletools
import zlib
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np

from classicnets.errors import ClassicNetsError

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
MAX_IDX_BYTES = 1 << 30  # 1 GiB, 20x the MNIST training images: a header promising more is damaged
READ_CHUNK = 1 << 24  # decompress 16 MiB at a time

CIFAR_SIDE = 32  # CIFAR rows hold 3 planes of 32x32 bytes: R, G, B
MAX_PICKLE_BYTES = 1 << 30  # the largest CIFAR file (CIFAR-100 train) is 155 MB
MAX_PICKLE_OPS = 2_000_000  # CIFAR-100 train, re-pickled by Python 3 with bytes file names: ~500 000


def read_file_bytes(path: Path, fix: str, limit: int | None = None) -> bytes:
    """The file's content as it is on disk; a file over `limit` bytes is refused before it is read."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if limit is not None and size > limit:
                raise ClassicNetsError(
                    f"{path} is {size} bytes, more than any file of its kind ({limit} at most); {fix}"
                )
            return f.read()
    except OSError as e:
        raise ClassicNetsError(f"cannot read {path}: {e.strerror or e}; {fix}") from None


def read_idx(path: Path, magic: int, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """(content, array) of an IDX file, gzipped when its name ends in .gz: the decompressed file as uint8
    (what its checksum is taken of) and the images N×rows×cols or labels N it holds (a view of it).

    The header is read and checked first; only then is the body read, into a buffer of the promised size,
    and a .gz is decompressed no further than one byte past it."""
    try:
        with path.open("rb") as raw:
            on_disk = os.fstat(raw.fileno()).st_size
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    return _read_idx_stream(stream, None, path, magic, fix)
            return _read_idx_stream(raw, on_disk, path, magic, fix)
    except EOFError:
        raise ClassicNetsError(f"{path} is a truncated gzip archive (it ends early); {fix}") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ClassicNetsError(f"{path} is not a valid gzip archive ({e}); {fix}") from None
    except OSError as e:
        raise ClassicNetsError(f"cannot read {path}: {e.strerror or e}; {fix}") from None


def _read_idx_stream(stream: BinaryIO, size: int | None, path: Path, magic: int, fix: str):
    """`size`: the file's length when it is not compressed (checked against the header before reading)."""
    kind = "image" if magic == IDX_IMAGES_MAGIC else "label"
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    header = stream.read(header_len)
    if len(header) < header_len:
        raise ClassicNetsError(
            f"{path} is too short for an IDX {kind} file ({len(header)} bytes, header needs {header_len}); "
            f"{fix}"
        )
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise ClassicNetsError(
            f"{path} is not an IDX {kind} file (magic number 0x{found:08x}, expected 0x{magic:08x}); {fix}"
        )
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    shape = "x".join(map(str, dims))
    expected = math.prod(dims)  # Python ints: no overflow, unlike numpy's product
    if not 0 < expected <= MAX_IDX_BYTES:
        if expected == 0:
            why = f"{shape} {kind}s, a dimension of 0"
        else:
            cap = f"{MAX_IDX_BYTES >> 30} GiB"
            why = f"{shape} = {expected} bytes of {kind}s, over the {cap} an IDX file may hold"
        raise ClassicNetsError(f"{path} has an impossible IDX header: it promises {why}; {fix}")
    if size is not None and size - header_len != expected:
        _size_mismatch(path, kind, shape, expected, size - header_len, fix)
    content = np.empty(header_len + expected, dtype=np.uint8)  # untouched until written
    content[:header_len] = np.frombuffer(header, dtype=np.uint8)
    view = memoryview(content)[header_len:]
    got = 0
    while got < expected:
        n = stream.readinto(view[got : min(expected, got + READ_CHUNK)])
        if not n:
            break
        got += n
    if got < expected:
        _size_mismatch(path, kind, shape, expected, got, fix)
    if stream.read(1):
        _size_mismatch(path, kind, shape, expected, None, fix)
    return content, content[header_len:].reshape(dims)


def _size_mismatch(path, kind, shape, expected, body, fix):
    what = "is truncated" if body is not None and body < expected else "has trailing bytes"
    holds = "more" if body is None else str(body)
    raise ClassicNetsError(
        f"{path} {what}: its header promises {shape} = {expected} bytes of {kind}s "
        f"but it holds {holds}; {fix}"
    )


# --------------------------------------------------------------------------------------------- CIFAR


class _Dtype:
    """Stands for `numpy.dtype(name)` while unpickling: plain numbers only, their byte order its one state."""

    NAMES: ClassVar[set[str]] = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"}

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or name not in self.NAMES:
            raise pickle.UnpicklingError(f"it holds an array of type {name!r}, which a CIFAR batch never has")
        self.dtype = np.dtype(name)

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in "<>|=" or any(state[2:5]):
            raise pickle.UnpicklingError("it holds a structured array type, which a CIFAR batch never has")
        self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


class _Array:
    """Stands for a numpy array while unpickling; `__setstate__` rebuilds it from bytes in the file."""

    def __init__(self, subtype=None, shape=(0,), dtype=None):
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("it holds an array subclass, which a CIFAR batch never has")
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("its array state is malformed")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _Dtype) or not isinstance(shape, tuple) or len(shape) > 4 or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"its array state is malformed (shape {shape!r})")
        raw = raw.encode("latin1") if isinstance(raw, str) else raw  # a Python 2 str, decoded as latin-1
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise pickle.UnpicklingError(f"its array of shape {shape} lacks the bytes that shape needs")
        self.array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _NdarrayClass:
    """Stands for numpy.ndarray: only ever the first argument of _reconstruct, never called."""

    def __call__(self, *args):
        raise pickle.UnpicklingError("it asks for numpy.ndarray(...), which a CIFAR batch never calls")


_NDARRAY = _NdarrayClass()


def _frombuffer(raw, dtype, shape, order="C"):  # how numpy writes an array into a protocol-5 pickle
    array = _Array(_NDARRAY)
    array.__setstate__((shape, dtype, order == "F", raw))
    return array.array


def _scalar(dtype, raw):
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(dtype, _Dtype) or not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("its numpy scalar is malformed")
    return np.frombuffer(raw, dtype=dtype.dtype)[0].item()


def _encode(text, encoding="latin1"):  # how Python 3 writes bytes into a protocol-2 pickle
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("it asks for _codecs.encode of something other than latin-1 text")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and plain numpy arrays, nothing else.

    CIFAR's python version is pickled; a pickle can run arbitrary code, so every global is one of the
    stand-ins above (numpy's own unpickling is never called: its dtype state can describe structures a
    CIFAR batch never has, and its constructors allocate whatever shape they are given)."""

    GLOBALS: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _Array,
        ("numpy._core.multiarray", "_reconstruct"): _Array,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _encode,
    }

    def find_class(self, module: str, name: str):
        found = self.GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return found


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle without building anything: a bounded number of opcodes, and memo indices that
    count up from 0 as a pickler writes them (the C unpickler sizes its memo by the largest index)."""
    stored = 0
    for count, (op, arg, pos) in enumerate(pickletools.genops(data), 1):
        if count > MAX_PICKLE_OPS:
            raise pickle.UnpicklingError(f"it holds over {MAX_PICKLE_OPS} opcodes, more than any CIFAR batch")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if arg > stored:
                raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} skips past the {stored} stored")
            stored += arg == stored
        elif op.name == "MEMOIZE":
            stored += 1
        elif op.name in ("GET", "BINGET", "LONG_BINGET") and arg >= stored:
            raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} was never stored")


def read_pickle(data: bytes, path: Path, fix: str) -> dict:
    """A CIFAR pickle as a dict with str keys (the files were written by Python 2: latin-1 strings)."""
    try:
        _check_opcodes(data)
        obj = _CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - whatever the unpickler trips over, the file is not a CIFAR batch
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise ClassicNetsError(
            f"{path} is not a CIFAR python batch (cannot unpickle: {reason}); {fix}"
        ) from None
    if not isinstance(obj, dict):
        raise ClassicNetsError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}); {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v.array if isinstance(v, _Array) else v
            for k, v in obj.items()}


def _labels(values, path: Path, key: str, fix: str) -> np.ndarray:
    """A batch's labels (a list of ints, or an integer array) as int64; anything else is an error."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.ndim == 1:
        return values.astype(np.int64)
    if isinstance(values, list) and all(type(v) is int and -(1 << 63) <= v < 1 << 63 for v in values):
        return np.array(values, dtype=np.int64)
    raise ClassicNetsError(f"{path}: '{key}' must be a list of integer labels; {fix}")


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
    labels = _labels(batch[label_key], path, label_key, fix)
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
