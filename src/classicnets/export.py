"""Export a trained checkpoint as a deployable model: ONNX, TorchScript, torch.export (.pt2) or safetensors.

Every format carries what serving needs besides the weights: the class names, the input size, the test
scale and the normalisation (mean/std), as metadata inside the file. TorchScript still works in this
torch but is deprecated upstream; `pt2` (torch.export) is its successor. safetensors holds the weights
only (no code): `model_from_safetensors` rebuilds the net from the model name and options stored with
them. We write safetensors ourselves (the format is one JSON header and raw little-endian bytes), so it
needs no extra package; files load with the `safetensors` package too.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from classicnets.errors import ClassicNetsError
from classicnets.evaluation import InferenceModel, load_inference_model
from classicnets.models import load_weights
from classicnets.models.registry import create_model
from classicnets.training import checkpoint, paths

FORMATS = {  # format -> file suffix
    "onnx": ".onnx",
    "torchscript": ".torchscript.pt",
    "pt2": ".pt2",
    "safetensors": ".safetensors",
}
METADATA_FORMAT = "classicnets.export"
EXTRA_FILE = "classicnets.json"  # the metadata's name inside TorchScript and .pt2 archives


def metadata(loaded: InferenceModel) -> dict[str, str]:
    """What a server needs besides the weights, as strings (safetensors and ONNX allow only strings)."""
    return {
        "format": METADATA_FORMAT,
        "model_name": loaded.name,
        "model_kwargs": json.dumps(loaded.model_kwargs),
        "classes": json.dumps(loaded.classes),
        "in_channels": str(loaded.in_channels),
        "input_size": str(loaded.input_size),
        "resize": json.dumps(loaded.resize),
        "mean": json.dumps(loaded.mean),
        "std": json.dumps(loaded.std),
        "data_name": json.dumps(loaded.data_name),
    }


def default_output(checkpoint_path: str | os.PathLike, fmt: str) -> Path:
    """Beside the checkpoint, same stem: runs/x/best.pt -> runs/x/best.onnx (a run dir: its last.pt)."""
    path = checkpoint.input_file(checkpoint_path)
    return path.parent / (path.stem + FORMATS[fmt])


def export(model_or_ckpt, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Write `model_or_ckpt` (a checkpoint path, dict, or InferenceModel) in format `fmt`; returns the path.

    `out` is refused before any work if it is the checkpoint itself (also through a link), a folder or
    another checkpoint; the file is written atomically, so a failed export (full disk, read-only folder)
    leaves no partial file and is one ClassicNetsError line."""
    if fmt not in FORMATS:
        raise ClassicNetsError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from_file = isinstance(model_or_ckpt, (str, os.PathLike))
    if out is None:
        if not from_file:
            raise ClassicNetsError("pass out=PATH: there is no checkpoint file to write beside")
        out = default_output(model_or_ckpt, fmt)
    inputs = [checkpoint.input_file(model_or_ckpt)] if from_file else []
    out = paths.check_output(out, inputs, replaces=METADATA_FORMAT.encode())
    loaded = load_inference_model(model_or_ckpt, "cpu")
    loaded.model.eval()
    writer = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2, "safetensors": _safetensors}[fmt]
    writer(loaded, out)
    return out


def example_input(loaded: InferenceModel, batch: int = 2) -> torch.Tensor:
    # Batch 2, not 1: exporters specialise a dimension of size 1, and the batch must stay free.
    return torch.zeros(batch, loaded.in_channels, loaded.input_size, loaded.input_size)


def _write_atomically(out: Path, write) -> None:
    """write(tmp_path) then rename onto `out`, so a failed export leaves no half file; a full disk or a
    read-only folder is one ClassicNetsError line. The temp name keeps the suffix: torch.export checks it."""
    checkpoint.atomic_write(out, write, keep_suffix=True)


def _in_memory(save) -> Callable[[Path], None]:
    """A writer that serialises with save(BytesIO) first and then writes the bytes from Python: torch's own
    file writer aborts the process when the disk fills (its destructor throws again), Python's raises."""
    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        save(buffer)
        tmp.write_bytes(buffer.getbuffer())

    return write


def _torchscript(loaded: InferenceModel, out: Path) -> None:
    extra = {EXTRA_FILE: json.dumps(metadata(loaded))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated upstream, still supported: see pt2
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input-size checks become constants
        traced = torch.jit.trace(loaded.model, example_input(loaded))
        _write_atomically(out, _in_memory(lambda f: torch.jit.save(traced, f, _extra_files=extra)))


def _dynamic_batch():
    return ({0: torch.export.Dim("batch", min=1)},)


def _pt2(loaded: InferenceModel, out: Path) -> None:
    program = torch.export.export(loaded.model, (example_input(loaded),), dynamic_shapes=_dynamic_batch())
    extra = {EXTRA_FILE: json.dumps(metadata(loaded))}
    _write_atomically(out, _in_memory(lambda f: torch.export.save(program, f, extra_files=extra)))


def _onnx(loaded: InferenceModel, out: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ClassicNetsError(
            f"ONNX export needs the {e.name} package: pip install onnx onnxscript") from None
    program = torch.onnx.export(loaded.model, (example_input(loaded),), dynamo=True, verbose=False, input_names=["images"],
                                output_names=["logits"], dynamic_shapes=_dynamic_batch())
    program.model.metadata_props.update(metadata(loaded))
    _write_atomically(out, lambda tmp: program.save(str(tmp)))


# --- safetensors ----------------------------------------------------------------------------------------

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_NAME = {name: dtype for dtype, name in _DTYPES.items()}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     meta: dict[str, str] | None = None) -> Path:
    """Write tensors in the safetensors layout: u64 little-endian header length, a JSON header of
    {name: {dtype, shape, data_offsets}} (+ "__metadata__" of strings), then the raw bytes in order."""
    if sys.byteorder != "little":
        raise ClassicNetsError("safetensors export needs a little-endian machine")
    header: dict[str, object] = {"__metadata__": dict(meta)} if meta else {}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise ClassicNetsError(f"cannot store {name!r} of dtype {tensor.dtype} in safetensors")
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad so the data starts 8-byte aligned, as the reference writer does
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            f.writelines(blobs)

    _write_atomically(path, write)
    return path


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


def _safetensors(loaded: InferenceModel, out: Path) -> None:
    save_safetensors(loaded.model.state_dict(), out, metadata(loaded))


def model_from_safetensors(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the net stored by `export(..., "safetensors")`: (model in eval mode, decoded metadata).
    The tensors are checked against the net its metadata describes (built on the meta device) first."""
    tensors, meta = load_safetensors(path)
    if meta.get("format") != METADATA_FORMAT:
        raise ClassicNetsError(
            f"{path} holds no classicnets metadata (model name and options): load its tensors with "
            "load_safetensors and build the net yourself")
    info = decode_metadata(meta, path)
    try:
        checkpoint.check({"model_name": info["model_name"], "model_kwargs": info["model_kwargs"],
                          "model": tensors}, path)
    except ClassicNetsError as e:
        again = "the file is damaged or was edited: export it again from its checkpoint"
        raise ClassicNetsError(str(e).replace(checkpoint.DAMAGED, again)) from None
    model = create_model(info["model_name"], **info["model_kwargs"])
    load_weights(model, tensors)
    return model.eval(), info


def decode_metadata(meta: dict[str, str], path: str | os.PathLike = "the export") -> dict:
    """The string metadata of an export back as Python values; damaged metadata is one ClassicNetsError."""
    try:
        info = {key: json.loads(value) for key, value in meta.items() if key not in ("format", "model_name")}
    except (TypeError, ValueError, RecursionError):
        raise ClassicNetsError(f"{path}: its metadata is not JSON; export it again from its checkpoint") from None
    info["model_name"] = meta.get("model_name")
    if not isinstance(info["model_name"], str) or not isinstance(info.get("model_kwargs"), dict):
        raise ClassicNetsError(f"{path}: its metadata lacks the model name or options; export it again from "
                               "its checkpoint")
    return info
