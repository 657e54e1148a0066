"""Look inside a net: per layer its output shape, parameters, MACs and receptive field, then totals.

    >>> s = summary(model, (1, 224, 224))
    >>> print(s)                      # the table
    >>> s.total_params, s.total_macs  # numbers to test against the papers
    >>> s.to_json()                   # the same, for tools

One forward pass with a batch of one, in eval mode and without gradients, with hooks on every module.
The pass runs on the model's own device; a model built on the meta device (`with torch.device("meta")`)
gives the same table without computing or allocating anything, which is how the CLI inspects VGG-16.

What is counted, and how exact it is:
- **MACs** (multiply-accumulates, per image) count convolutions (output values x in_channels/groups x
  kernel area) and linear layers (in x out per output row): the papers' and torchvision's "FLOPs" figures
  count the same and they are over 99% of these nets' arithmetic. Bias additions, pooling, normalisation
  (BN, LRN) and activations are element-wise and counted as 0.
- **Receptive field** is the theoretical one: the side of the window of input pixels (padding included)
  that one output value of the layer can see, with its `jump` (the distance in input pixels between two
  neighbouring outputs, i.e. the product of the strides so far). Per layer rf_out = rf_in +
  (kernel - 1) x dilation x jump_in and jump_out = jump_in x stride. It is tracked per tensor, so each
  layer uses its actual input's values; it is exact for chains and for blocks whose branches are merged
  inside one module (GoogLeNet's Inception: the concatenation's window is the largest of its branches').
  A layer whose input came from an op outside any module (a functional add or cat at the top level)
  uses the most recently produced tensor's values, the main path's for residual nets. Linear layers and
  global pooling see the whole input: "all". It can exceed the image size: a deep net's last layers see
  past the border into the padding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from classicnets.errors import ClassicNetsError

# A receptive field as the tracker sees it: per spatial axis (rf, jump); None means the whole input.
_Field = tuple[tuple[float, ...], tuple[float, ...]] | None

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                   nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

BYTES_PER_VALUE = 4  # activations are reported at float32


@dataclass(frozen=True)
class LayerRow:
    """One row of the table: one call of one module.

    `output_shape` leaves out the batch dimension (C, H, W for conv layers). `receptive_field` and `jump`
    are ints when equal on every spatial axis (the usual square kernels), a tuple per axis otherwise,
    and None when the layer sees the whole input (linear layers, global pooling).
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: int | tuple[int, ...] | None
    jump: int | float | tuple[int | float, ...] | None
    depth: int
    tap: str = ""  # the layer's conventional name, where the net has one (VGG: relu4_3 is features.22)


@dataclass
class Summary:
    """The result of `summary()`: `str()` is the table; rows and totals are plain attributes."""

    model: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_macs: int
    output_shape: tuple[int, ...]
    peak_activation: tuple[int, ...]  # shape (no batch) of the largest output of any layer
    unused_params: int = 0  # parameters of modules the forward pass never ran (e.g. aux heads in eval)
    notes: list[str] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.total_macs / 1e9

    def to_dict(self) -> dict:
        def plain(value):
            return list(value) if isinstance(value, tuple) else value

        rows = [{k: plain(v) for k, v in asdict(r).items()} for r in self.rows]
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "layers": rows,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "unused_params": self.unused_params,
            "total_macs": self.total_macs,
            "gmacs": round(self.gmacs, 4),
            "output_shape": list(self.output_shape),
            "peak_activation": {"shape": list(self.peak_activation),
                                "values": math.prod(self.peak_activation)},
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return format_table(self)


def summary(model: nn.Module, input_size: Sequence[int] | str, *, device: str | torch.device | None = None,
            depth: int | None = None) -> Summary:
    """Run one forward pass of a 1 x C x H x W batch through `model` and tabulate every layer.

    `input_size` is (C, H, W) or a string "CxHxW". `depth=None` lists every leaf module (conv, relu,
    pool, ...); `depth=1` lists the model's direct children (a GoogLeNet Inception block as one row, with
    its layers' parameters and MACs summed), `depth=2` one level further, and so on. `device` defaults
    to the device of the model's parameters. The model's train/eval mode is restored afterwards.
    """
    shape = parse_input_size(input_size) if isinstance(input_size, str) else _check_input_size(input_size)
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ClassicNetsError(f"depth must be a positive integer (1 = the model's direct children); got {depth!r}")
    first = next(iter(model.parameters()), None)
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *shape), device=device, dtype=dtype)

    tracer = _Tracer(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(x)
    except (ClassicNetsError, NotImplementedError):  # NotImplementedError: a layer has no kernel here (meta)
        raise
    except RuntimeError as e:  # a model from elsewhere refusing the input (too small, wrong channels)
        where = f" in {tracer.current}" if tracer.current else ""
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClassicNetsError(f"{_model_name(model)} cannot take a {_dims(shape)} input: the forward pass "
                               f"failed{where}: {first_line}") from e
    finally:
        tracer.remove()
        model.train(was_training)

    calls = tracer.calls
    out_tensor = _first_tensor(output)
    shown = [c for c in calls if (c.leaf and (depth is None or c.depth <= depth)) or c.depth == depth]
    taps = {module: tap for tap, module in model.tap_names().items()} if hasattr(model, "tap_names") else {}
    rows = [_row(c, taps.get(c.name, "")) for c in sorted(shown, key=lambda c: c.seq)]
    ran = {id(p) for c in calls for p in c.module.parameters()}
    peak = max((c.shape for c in calls), key=math.prod, default=shape)
    notes = []
    unused = sum(p.numel() for p in model.parameters() if id(p) not in ran)
    if unused:
        notes.append(f"{unused:,} parameters belong to layers this pass did not run (e.g. auxiliary heads, "
                     "which run only in training mode); they are in the totals")
    return Summary(
        model=_model_name(model),
        input_size=shape,
        rows=rows,
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_macs=sum(c.macs for c in calls if c.leaf),
        output_shape=tuple(out_tensor.shape[1:]) if out_tensor is not None else (),
        peak_activation=peak,
        unused_params=unused,
        notes=notes,
    )


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'1x224x224' -> (1, 224, 224); anything else is a ClassicNetsError showing the expected form."""
    parts = str(text).lower().replace("×", "x").replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ClassicNetsError(f"input size must be CxHxW with positive integers, such as 1x224x224 "
                               f"(channels x height x width); got {text!r}")
    return values  # type: ignore[return-value]


def _check_input_size(size: Sequence[int]) -> tuple[int, ...]:
    values = tuple(size) if isinstance(size, (tuple, list, torch.Size)) else ()
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ClassicNetsError(f"input_size must be (C, H, W) with positive integers, such as (1, 224, 224); "
                               f"got {size!r}")
    return values


# --- Tracing ---------------------------------------------------------------------------------------------

@dataclass
class _Call:
    seq: int  # order in which calls started
    name: str
    module: nn.Module
    depth: int
    leaf: bool
    shape: tuple[int, ...] = ()
    macs: int = 0
    field: _Field = None


class _Tracer:
    """Forward hooks on every submodule: records each call and propagates receptive fields per tensor."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[_Call] = []
        self.current = ""  # the module running now, for error messages
        self._fields: dict[int, _Field] = {}  # id(tensor) -> its receptive field
        self._alive: list[torch.Tensor] = []  # keeps tracked tensors alive so their ids stay unique
        self._produced: list[_Field] = []  # fields of module outputs, in order of completion
        self._open: list[tuple[_Call, int, int]] = []  # running containers: call, len(produced), macs so far
        self._macs = 0
        self._seen_input = False
        self._handles = []
        named = [(n, m) for n, m in model.named_modules() if n] or [(type(model).__name__, model)]
        for name, module in named:
            leaf = next(module.children(), None) is None
            self._handles.append(module.register_forward_pre_hook(self._pre(name, module, leaf)))
            self._handles.append(module.register_forward_hook(self._post(leaf)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._fields.clear()
        self._alive.clear()

    def _track(self, tensor: torch.Tensor, f: _Field) -> None:
        self._fields[id(tensor)] = f
        self._alive.append(tensor)

    def _input_field(self, args: tuple) -> _Field:
        x = _first_tensor(args)
        if x is None:
            return self._produced[-1] if self._produced else None
        if not self._seen_input:  # the first module called sees the model's input: rf 1, jump 1
            self._seen_input = True
            if id(x) not in self._fields:
                axes = max(x.dim() - 2, 1)
                self._track(x, ((1,) * axes, (1,) * axes))
        if id(x) in self._fields:
            return self._fields[id(x)]
        # Made by an op outside any module (a functional cat or add): take the latest module output.
        return self._produced[-1] if self._produced else ((1,) * max(x.dim() - 2, 1),) * 2

    def _pre(self, name: str, module: nn.Module, leaf: bool):
        def hook(mod, args):
            call = _Call(seq=len(self.calls), name=name, module=module, depth=name.count(".") + 1, leaf=leaf)
            self.calls.append(call)
            self.current = name
            call.field = self._input_field(args)  # the input's field until the output is known
            self._open.append((call, len(self._produced), self._macs))
        return hook

    def _post(self, leaf: bool):
        def hook(mod, args, output):
            call, start, macs_before = self._open.pop()
            out = _first_tensor(output)
            if out is None:
                return
            call.shape = tuple(out.shape[1:])
            if leaf:
                call.macs = _macs(mod, _first_tensor(args), out)
                self._macs += call.macs
                call.field = _propagate(mod, call.field, _first_tensor(args), out)
            else:
                call.macs = self._macs - macs_before
                inner = self._produced[start:]
                if id(out) in self._fields:  # the output of a child: exact
                    call.field = self._fields[id(out)]
                elif inner:  # merged from branches (a concatenation): the widest branch's window
                    call.field = _widest(inner)
            self._track(out, call.field)
            self._produced.append(call.field)
        return hook


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


# --- MACs and receptive fields ---------------------------------------------------------------------------

def _macs(module: nn.Module, x: torch.Tensor | None, out: torch.Tensor) -> int:
    """Multiply-accumulates per image of one leaf call (convs and linear layers; others 0)."""
    per_image = out.numel() // max(out.shape[0], 1) if out.dim() > 1 else out.numel()
    if isinstance(module, _CONVS):
        return per_image * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def _axes(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _propagate(module: nn.Module, f: _Field, x: torch.Tensor | None, out: torch.Tensor) -> _Field:
    """The receptive field of a leaf's output from its input's."""
    if f is None:
        return None
    rf, jump = f
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, (*_CONVS, *_POOLS)):
        n = len(rf)
        kernel = _axes(module.kernel_size, n)
        stride = _axes(module.stride if module.stride is not None else module.kernel_size, n)
        dilation = _axes(getattr(module, "dilation", 1), n)
        if len(kernel) != n:  # a layer of another dimensionality than the input: start afresh
            rf, jump, n = (1,) * len(kernel), (1,) * len(kernel), len(kernel)
        rf = tuple(r + (k - 1) * d * j for r, k, d, j in zip(rf, kernel, dilation, jump))
        jump = tuple(j * s for j, s in zip(jump, stride))
        return rf, jump
    if isinstance(module, _ADAPTIVE_POOLS) and x is not None:
        sizes_in, sizes_out = tuple(x.shape[2:]), tuple(out.shape[2:])
        if math.prod(sizes_out) == 1:
            return None  # global pooling
        if len(sizes_in) != len(rf):
            return f
        # torch's windows: [floor(i*n/m), ceil((i+1)*n/m)); the widest one, at an average stride n/m.
        windows = tuple(max(-(-(i + 1) * n // m) - (i * n // m) for i in range(m)) if m < n else 1
                        for n, m in zip(sizes_in, sizes_out))
        strides = tuple(n / m if m < n else 1 for n, m in zip(sizes_in, sizes_out))
        rf = tuple(r + (k - 1) * j for r, k, j in zip(rf, windows, jump))
        jump = tuple(_tidy(j * s) for j, s in zip(jump, strides))
        return rf, jump
    return f  # element-wise, channel-wise (BN, LRN, ReLU, dropout) and reshaping layers keep the window


def _tidy(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _widest(fields: list[_Field]) -> _Field:
    if any(f is None for f in fields):
        return None
    n = min(len(f[0]) for f in fields)
    return (tuple(max(f[0][i] for f in fields) for i in range(n)),
            tuple(max(f[1][i] for f in fields) for i in range(n)))


def _collapse(values: tuple) -> int | float | tuple:
    values = tuple(_tidy(v) for v in values)
    return values[0] if len(set(values)) == 1 else values


def _row(call: _Call, tap: str = "") -> LayerRow:
    rf = jump = None
    if call.field is not None:
        rf, jump = _collapse(call.field[0]), _collapse(call.field[1])
        rf = math.ceil(rf) if isinstance(rf, float) else rf
    return LayerRow(
        name=call.name,
        type=type(call.module).__name__,
        output_shape=call.shape,
        params=sum(p.numel() for p in call.module.parameters()),
        macs=call.macs,
        receptive_field=rf,
        jump=jump,
        depth=call.depth,
        tap=tap,
    )


# --- The table ---------------------------------------------------------------------------------------------

def _model_name(model: nn.Module) -> str:
    name = getattr(model, "name", None)
    return name if isinstance(name, str) and name else type(model).__name__


def _dims(shape: Sequence[int]) -> str:
    return "×".join(str(v) for v in shape) if shape else "-"


def _axis_text(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, tuple):
        return "×".join(_axis_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def human(n: float) -> str:
    """15_470_264_320 -> '15.47 G'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g} "


def format_table(s: Summary) -> str:
    tapped = any(r.tap for r in s.rows)  # a Tap column for nets with named taps (VGG)
    header = ("Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump", *(("Tap",) if tapped else ()))
    body = [(r.name, r.type, _dims(r.output_shape),
             f"{r.params:,}" if r.params else "-", f"{r.macs:,}" if r.macs else "-",
             _axis_text(r.receptive_field), "-" if r.receptive_field is None else _axis_text(r.jump),
             *((r.tap,) if tapped else ()))
            for r in s.rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}  # numbers align right

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    peak = math.prod(s.peak_activation)
    lines = [
        f"{s.model}, input {_dims(s.input_size)} (batch of 1)",
        line(header), rule, *(line(b) for b in body), rule,
        f"Total params:       {s.total_params:,} (trainable {s.trainable_params:,})",
        f"Total MACs:         {s.total_macs:,} ({human(s.total_macs)}MACs; convolutions and linear layers)",
        f"Output:             {_dims(s.output_shape)}",
        (f"Largest activation: {_dims(s.peak_activation)} = {peak:,} values "
         f"({human(peak * BYTES_PER_VALUE)}B at float32)"),
        *(f"Note: {n}" for n in s.notes),
    ]
    return "\n".join(lines)
