"""Export a trained checkpoint as a deployable model: ONNX, TorchScript, torch.export (.pt2) or safetensors.

Every format carries what serving needs besides the weights: the class names, the input size, the test
scale and the normalisation (mean/std), as metadata inside the file. TorchScript still works in this
torch but is deprecated upstream; `pt2` (torch.export) is its successor. safetensors holds the weights
only (no code): `model_from_safetensors` rebuilds the net from the model name and options stored with
them. We write safetensors ourselves (the format is one JSON header and raw little-endian bytes), so it
needs no extra package; files load with the `safetensors` package too.

Two options change the graph (onnx, torchscript, pt2): `include_normalize` puts (x - mean) / std in front
of the net (`Normalized`), so the deployed model takes raw 0-1 images and the metadata says
"normalized_inside": "true"; `dynamic_size` (onnx and pt2) leaves height and width free, from the net's
smallest input size up, where `dynamic_size_refusal` finds nothing in the net that the exporter would fix
at the export size.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.evaluation import InferenceModel, load_inference_model
from classicnets.files import SAFETENSORS_DTYPES, load_safetensors
from classicnets.models import load_weights
from classicnets.models.registry import create_model, get_entry
from classicnets.training import checkpoint, paths

FORMATS = {  # format -> file suffix
    "onnx": ".onnx",
    "torchscript": ".torchscript.pt",
    "pt2": ".pt2",
    "safetensors": ".safetensors",
}
METADATA_FORMAT = "classicnets.export"
EXTRA_FILE = "classicnets.json"  # the metadata's name inside TorchScript and .pt2 archives


def metadata(loaded: InferenceModel, *, normalized_inside: bool = False,
             dynamic_size: bool | None = None) -> dict[str, str]:
    """What a server needs besides the weights, as strings (safetensors and ONNX allow only strings).

    "normalized_inside" says whether the graph itself applies (x - mean) / std ("true": feed raw 0-1
    pixels; mean and std are kept for information) or the caller must ("false"). Graph formats also say
    whether height and width are free ("dynamic_size"; the smallest size is "min_input_size")."""
    meta = {
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
        "normalized_inside": json.dumps(normalized_inside),
    }
    if dynamic_size is not None:
        meta["dynamic_size"] = json.dumps(dynamic_size)
        meta["min_input_size"] = str(min_input_size(loaded))
    return meta


def default_output(checkpoint_path: str | os.PathLike, fmt: str) -> Path:
    """Beside the checkpoint, same stem: runs/x/best.pt -> runs/x/best.onnx (a run dir: its last.pt)."""
    path = checkpoint.input_file(checkpoint_path)
    return path.parent / (path.stem + FORMATS[fmt])


def export(model_or_ckpt, fmt: str, out: str | os.PathLike | None = None, *, dynamic_size: bool = False,
           include_normalize: bool = False) -> Path:
    """Write `model_or_ckpt` (a checkpoint path, dict, or InferenceModel) in format `fmt`; returns the path.

    `include_normalize` puts the checkpoint's (x - mean) / std inside the graph (onnx, torchscript, pt2), so
    the file takes raw 0-1 images. `dynamic_size` (onnx, pt2) leaves height and width free from the net's
    smallest input size up, besides the batch; a net whose layers the exporter would fix at one size is
    refused by `dynamic_size_refusal`. Bad combinations and an `out` that is the checkpoint itself (also
    through a link), a folder or another checkpoint are refused before the export runs; the file is
    written atomically, so a failed export (full disk, read-only folder) leaves no partial file and is one
    ClassicNetsError line."""
    if fmt not in FORMATS:
        raise ClassicNetsError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_options(fmt, dynamic_size=dynamic_size, include_normalize=include_normalize)
    from_file = isinstance(model_or_ckpt, (str, os.PathLike))
    if out is None:
        if not from_file:
            raise ClassicNetsError("pass out=PATH: there is no checkpoint file to write beside")
        out = default_output(model_or_ckpt, fmt)
    inputs = [checkpoint.input_file(model_or_ckpt)] if from_file else []
    out = paths.check_output(out, inputs, replaces=METADATA_FORMAT.encode())
    loaded = load_inference_model(model_or_ckpt, "cpu")
    loaded.model.eval()
    if dynamic_size and (reason := dynamic_size_refusal(loaded.model, fmt, loaded.name)):
        raise ClassicNetsError(reason)
    if fmt == "safetensors":
        _safetensors(loaded, out)
        return out
    net = Normalized(loaded.model, loaded.mean, loaded.std, loaded.in_channels) if include_normalize else loaded.model
    dynamic = dynamic_size or fmt == "torchscript"  # a scripted net takes any size it allows
    meta = metadata(loaded, normalized_inside=include_normalize, dynamic_size=dynamic)
    writer = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2}[fmt]
    writer(loaded, net.eval(), meta, out, dynamic_size)
    return out


def check_options(fmt: str, *, dynamic_size: bool = False, include_normalize: bool = False) -> None:
    """Refuse an option the format cannot carry, before any work, in one line with the fix."""
    if include_normalize and fmt == "safetensors":
        raise ClassicNetsError("--include-normalize needs a graph format (onnx, torchscript, pt2): safetensors "
                               "holds weights only; drop the flag and normalise with the mean/std in its metadata")
    if dynamic_size and fmt == "safetensors":
        raise ClassicNetsError("--dynamic-size works with --format onnx, pt2 or torchscript: safetensors holds "
                               "weights only (the net model_from_safetensors builds takes any size already); "
                               "drop the flag")


class Normalized(nn.Module):
    """`model` after (x - mean) / std: an exported graph that takes raw 0-1 images (N x C x H x W).

    mean and std are per-channel lists in [0, 1] units as checkpoints store them (one value for all
    channels also works); None means no mean subtraction / no division (the VGG paper subtracts the mean
    only). They are buffers of shape 1 x C x 1 x 1, so they travel with the state dict and the device."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
                 in_channels: int) -> None:
        super().__init__()
        self.model = model
        for name, values, neutral in (("mean", mean, 0.0), ("std", std, 1.0)):
            values = [neutral] * in_channels if values is None else [float(v) for v in values]
            if len(values) not in (1, in_channels):
                raise ClassicNetsError(f"the checkpoint's {name} has {len(values)} values for {in_channels}-channel "
                                       f"images: it cannot be put inside the graph; export without --include-normalize")
            if name == "std" and min(values) <= 0:
                raise ClassicNetsError(f"the checkpoint's std {values} is not positive: export without "
                                       "--include-normalize")
            self.register_buffer(name, torch.tensor(values * (in_channels // len(values))).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def min_input_size(loaded: InferenceModel) -> int:
    """The smallest height and width the net takes (a classicnets net knows it; another net: 1)."""
    return int(getattr(loaded.model, "min_input_size", 1))


def dynamic_size_refusal(model: nn.Module, fmt: str, name: str | None = None) -> str | None:
    """Why `model` cannot be exported to `fmt` with free height and width (one line naming the layer and
    the fix), or None when it can.

    The rules, from exporting every registered net with torch 2.14 and comparing with eager at several
    sizes (tests/test_export_options.py keeps doing it for one net of each kind):
    - a pool with ceil_mode=True and stride > 1 (GoogLeNet's, as torchvision's): its output size has a
      branch on the input size that torch.export cannot decide symbolically, so the export fails;
    - ONNX only: a pool to a fixed grid larger than 1x1 (the FC heads' AdaptiveAvgPool2d((7, 7)) at 224, or
      (2, 2) at 64): torch.export keeps it general (pt2 works), but the ONNX converter fixes its windows at
      the export size, so any other final map size fails in onnxruntime.
    A global pool to 1x1 (NiN, GoogLeNet, VGG with head='gap', or an FC head whose final map is 1x1 at
    the training size) is fine everywhere."""
    name = name or getattr(model, "name", type(model).__name__)
    if fmt == "torchscript":
        return None  # scripted, not traced: the net's own code, which takes any size it allows
    for path, module in model.named_modules():
        stride = getattr(module, "stride", 1)
        if getattr(module, "ceil_mode", False) and max(_pair(stride)) > 1:
            return (f"{name} cannot be exported with --dynamic-size: its ceil_mode pooling ({path}) has a "
                    "size-dependent output that torch.export cannot keep free; use --format torchscript "
                    "(any size) or export without --dynamic-size (a fixed input size)")
    if fmt != "onnx":
        return None
    for path, module in model.named_modules():
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            grid = [v for v in _pair(module.output_size) if v is not None]
            if any(v != 1 for v in grid):
                size = "x".join(str(v) for v in _pair(module.output_size))
                gap = ", or train it with --head gap" if _has_option(name, "head") else ""
                return (f"{name} cannot be exported to ONNX with --dynamic-size: {path} pools the final map to a "
                        f"fixed {size} grid, which the ONNX converter fixes at the export size; use --format pt2, "
                        f"export without --dynamic-size{gap}")
    return None


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _has_option(name: str, option: str) -> bool:
    try:
        return option in get_entry(name).options
    except ClassicNetsError:  # not a registered net
        return False


def example_input(loaded: InferenceModel, batch: int = 2) -> torch.Tensor:
    # Batch 2, not 1: exporters specialise a dimension of size 1, and the batch must stay free.
    return torch.zeros(batch, loaded.in_channels, loaded.input_size, loaded.input_size)


def exported_program(loaded: InferenceModel, net: nn.Module | None = None, *,
                     dynamic_size: bool = False) -> torch.export.ExportedProgram:
    """torch.export of `net` (default: the loaded net) with the batch free, and with `dynamic_size` height
    and width from `min_input_size` up. A failure to keep the sizes free is one ClassicNetsError line; we
    never fall back to a program fixed at the example size, as torch.onnx.export itself would."""
    net = loaded.model if net is None else net
    shapes = {0: torch.export.Dim("batch", min=1)}
    if dynamic_size:
        low = min_input_size(loaded)
        shapes.update({2: torch.export.Dim("height", min=low), 3: torch.export.Dim("width", min=low)})
    try:
        with _free_sizes():
            return torch.export.export(net, (example_input(loaded),), dynamic_shapes=(shapes,))
    except Exception as e:  # torch raises several types (UserError, AssertionError, ...) for one cause
        if not dynamic_size:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ClassicNetsError(f"{loaded.name}: torch.export cannot keep height and width free ({first}); "
                               "export it without --dynamic-size") from None


def _free_sizes():
    """Export as torch.onnx.export does ("support the dynamism with 0/1 input dim"): size-oblivious guards.
    Without it, a feature map that is 1x1 at the smallest input (every net's last map at min_input_size)
    makes torch.export fix the sizes, because of stride checks that only matter for 1-long dimensions."""
    config = getattr(torch.fx.experimental, "_config", None)
    if config is None or not hasattr(config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return config.patch(backed_size_oblivious=True)


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


def _torchscript(loaded: InferenceModel, net: nn.Module, meta: dict[str, str], out: Path, _dynamic: bool) -> None:
    extra = {EXTRA_FILE: json.dumps(meta)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated upstream, still supported: see pt2
        # Scripted, not traced: the net's input check and any batch or image size survive in the file.
        scripted = torch.jit.script(net)
        _write_atomically(out, _in_memory(lambda f: torch.jit.save(scripted, f, _extra_files=extra)))


def _pt2(loaded: InferenceModel, net: nn.Module, meta: dict[str, str], out: Path, dynamic: bool) -> None:
    program = exported_program(loaded, net, dynamic_size=dynamic)
    extra = {EXTRA_FILE: json.dumps(meta)}
    _write_atomically(out, _in_memory(lambda f: torch.export.save(program, f, extra_files=extra)))


def _onnx(loaded: InferenceModel, net: nn.Module, meta: dict[str, str], out: Path, dynamic: bool) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ClassicNetsError(
            f"ONNX export needs the {e.name} package: pip install onnx onnxscript") from None
    # Our own torch.export first: torch.onnx.export given a module would fall back to a program fixed at
    # the example size when the sizes cannot stay free, and still name them free in the graph.
    program = torch.onnx.export(exported_program(loaded, net, dynamic_size=dynamic), dynamo=True, verbose=False,
                                input_names=["images"], output_names=["logits"])
    names = ("batch", None, "height", "width")
    program.rename_axes({dim: name for dim, name in zip(program.model.graph.inputs[0].shape, names)
                         if name and not isinstance(dim, int)})
    program.model.metadata_props.update(meta)
    _write_atomically(out, lambda tmp: program.save(str(tmp)))


# --- safetensors ----------------------------------------------------------------------------------------

def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     meta: dict[str, str] | None = None) -> Path:
    """Write tensors in the safetensors layout: u64 little-endian header length, a JSON header of
    {name: {dtype, shape, data_offsets}} (+ "__metadata__" of strings), then the raw bytes in order."""
    if sys.byteorder != "little":
        raise ClassicNetsError("safetensors export needs a little-endian machine")
    header: dict[str, object] = {"__metadata__": dict(meta)} if meta else {}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ClassicNetsError(f"cannot store {name!r} of dtype {tensor.dtype} in safetensors")
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
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


def _safetensors(loaded: InferenceModel, out: Path) -> None:
    save_safetensors(loaded.model.state_dict(), out, metadata(loaded, normalized_inside=False))


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
    # Files written before these keys existed: the caller normalised, and only the batch was free.
    info.setdefault("normalized_inside", False)
    info.setdefault("dynamic_size", False)
    if not isinstance(info["normalized_inside"], bool) or not isinstance(info["dynamic_size"], bool):
        raise ClassicNetsError(f"{path}: its metadata's normalized_inside or dynamic_size is not true/false; "
                               "export it again from its checkpoint")
    return info
