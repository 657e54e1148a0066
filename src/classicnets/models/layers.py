"""The pieces every net shares: the base class, layer lists from table tokens, heads, size arithmetic.

Each model file (vgg, alexnet, nin, googlenet, lenet) is a table plus a few lines that call these; a fix
here (say, to the input-size check) reaches every net at once.
"""

from __future__ import annotations

import itertools
import math
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from classicnets.errors import ClassicNetsError

AuxOutputs = namedtuple("AuxOutputs", ["logits", "aux"])
AuxOutputs.__doc__ = """Training-mode output of a net with auxiliary classifiers (GoogLeNet with aux_logits=True).

`logits` is the main head's output, `aux` a tuple of the auxiliary heads' logits (earliest first). The
training loss is CE(logits) + model.aux_weight * sum(CE(a) for a in aux); in eval mode the net returns
plain logits."""


# --- Table tokens ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conv:
    """A conv layer in a table: `channels` filters of `kernel`x`kernel`; padding None keeps the size."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int | None = None

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding


POOL = "M"  # the table's pooling layer (each net says which: VGG 2x2/2 max, AlexNet 3x3/2 max, LeNet avg)
LRN = "LRN"  # local response normalisation, AlexNet's constants


def local_response_norm() -> nn.LocalResponseNorm:
    """AlexNet's LRN (Krizhevsky et al. 2012, sec. 3.3): n=5, alpha=1e-4, beta=0.75, k=2.

    The paper divides by (k + alpha * sum a^2)^beta; torch's LocalResponseNorm uses alpha/n instead of
    alpha, so we pass alpha * n to get the paper's formula exactly.
    """
    size, alpha = 5, 1e-4
    return nn.LocalResponseNorm(size=size, alpha=alpha * size, beta=0.75, k=2.0)


def make_layers(
    tokens: Iterable[int | Conv | str],
    in_channels: int,
    width: float = 1.0,
    *,
    batch_norm: bool = False,
    pool: Callable[[], nn.Module] = lambda: nn.MaxPool2d(kernel_size=2, stride=2),
    activation: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
) -> tuple[nn.Sequential, list[tuple[int, int | None]]]:
    """Turn a table row into one flat Sequential, torchvision's layout: conv, [bn], relu, ...

    Tokens: an int n is a 3x3 conv with n filters (the VGG table's shorthand), `Conv(...)` any other conv,
    "M" the net's pooling layer, "LRN" AlexNet's response normalisation. Conv widths are scaled by
    `width`. Returns the Sequential and, per conv, (its index, its batch-norm index or None), which the
    warm start uses to find layers.
    """
    layers: list[nn.Module] = []
    convs: list[tuple[int, int | None]] = []
    for token in tokens:
        if token == POOL:
            layers.append(pool())
        elif token == LRN:
            layers.append(local_response_norm())
        else:
            spec = token if isinstance(token, Conv) else Conv(int(token))
            out = scaled(spec.channels, width)
            conv_index = len(layers)
            layers.append(nn.Conv2d(in_channels, out, spec.kernel, stride=spec.stride, padding=spec.pad))
            bn_index = None
            if batch_norm:
                bn_index = len(layers)
                layers.append(nn.BatchNorm2d(out))
            layers.append(activation())
            convs.append((conv_index, bn_index))
            in_channels = out
    return nn.Sequential(*layers), convs


class Dropout(nn.Dropout):
    """`nn.Dropout` whose CPU mask costs a tenth: every net's dropout layer.

    Why: torch's CPU dropout draws one Bernoulli sample per element; for VGG-11 width 1/4's two classifier
    dropouts (256 x 1024 values each, the fast recipe's FC head until 2026-12-03) that was ~10% of a training step on 2 cores. Here each 64-bit
    random word gives four 16-bit draws, so an element is kept with probability 1 - p rounded to a
    multiple of 1/65536. Same module otherwise (state dict, repr, eval mode); on a GPU, under
    torch.compile / torch.export, and in TorchScript or torch.fx graphs, torch's own dropout runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch
            return F.dropout(x, self.p, self.training, self.inplace)
        if (isinstance(x, torch.fx.Proxy) or not self.training or x.device.type != "cpu"
                or not 0.0 < self.p < 1.0 or torch.compiler.is_compiling()):
            return F.dropout(x, self.p, self.training, self.inplace)
        return _cpu_dropout(x, self.p, self.inplace)


def _cpu_dropout(x: torch.Tensor, p: float, inplace: bool) -> torch.Tensor:
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2 ** 63), 2 ** 63 - 1)
    draws = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform over [-32768, 32767]
    keep = (draws >= round(p * 65536) - 32768).to(x.dtype)
    if inplace:
        return x.mul_(keep).mul_(1.0 / (1.0 - p))
    return x * keep * (1.0 / (1.0 - p))


def mlp_head(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    dropout: float | None,
    dropout_first: bool = False,
    activation: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
) -> nn.Sequential:
    """The FC classifier: per hidden layer Linear, activation, Dropout (VGG/AlexNet paper: dropout on the
    first two FC layers), then the class layer.

    `dropout_first` puts each Dropout before its Linear instead (torchvision's AlexNet). `dropout=None`
    leaves the Dropout modules out (LeNet); 0.0 keeps them as identities so layer indices stay
    torchvision's (classifier.0/3/6).
    """
    layers: list[nn.Module] = []
    for units in hidden:
        if dropout is not None and dropout_first:
            layers.append(Dropout(dropout))
        layers += [nn.Linear(in_features, units), activation()]
        if dropout is not None and not dropout_first:
            layers.append(Dropout(dropout))
        in_features = units
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


class ConvBlock(nn.Module):
    """conv, [bn], relu as one module: GoogLeNet's unit (torchvision's BasicConv2d keys: conv, bn).

    With batch norm the conv has no bias (the BN's shift replaces it) and BN eps is 1e-3, as torchvision.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 padding: int = 0, *, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding,
                              bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


# --- Sizes --------------------------------------------------------------------------------------------

def scaled(channels: int, width: float) -> int:
    """channels * width rounded down (the tutorials' `64 // 4`); the epsilon absorbs float noise."""
    return math.floor(channels * width + 1e-9)


def check_options(name: str, *, num_classes: int, in_channels: int, width: float, dropout: float | None,
                  channels: Iterable[int]) -> None:
    """Refuse option values that cannot build a net, naming the option and a valid value."""
    for option, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ClassicNetsError(f"{name}: {option} must be a positive integer; got {value!r}")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
        raise ClassicNetsError(f"{name}: width must be a positive number such as 0.25 or 1.0; got {width!r}")
    smallest = min(channels)
    if scaled(smallest, width) < 1:
        raise ClassicNetsError(
            f"{name}: width={width:g} leaves its {smallest}-channel layers with 0 channels; "
            f"use width >= {1 / smallest:g}"
        )
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ClassicNetsError(f"{name}: dropout must be a probability in [0, 1); got {dropout!r}")


def hidden_units(name: str, units: int, width: float, fc_width: int | None) -> int:
    """Units of a net's hidden FC layers: `fc_width` when given (the tutorials keep 4096 with a quarter of
    the conv channels), else the paper's `units` scaled by the width."""
    if fc_width is None:
        return scaled(units, width)
    if not isinstance(fc_width, int) or isinstance(fc_width, bool) or not 1 <= fc_width <= 1 << 20:
        raise ClassicNetsError(f"{name}: fc_width must be a whole number of units such as 4096; got {fc_width!r}")
    return fc_width


@dataclass(frozen=True)
class Window:
    """A conv or pool as the spatial size sees it."""

    kind: str
    kernel: int
    stride: int
    padding: int
    ceil_mode: bool = False

    def out(self, n: int) -> int:
        """Output size for input size n, torch's formula (0 when torch would refuse)."""
        extra = self.stride - 1 if self.ceil_mode else 0
        size = (n + 2 * self.padding - self.kernel + extra) // self.stride + 1
        if self.ceil_mode and (size - 1) * self.stride >= n + self.padding:
            size -= 1  # the last window must start inside the input or its left padding
        return max(size, 0)

    @property
    def shrinks(self) -> bool:
        return self.stride > 1 or self.kernel > 2 * self.padding + 1


def windows_of(modules: Iterable[nn.Module]) -> list[Window]:
    """The spatial windows along a chain of modules, in order (size-keeping layers included)."""
    found = []
    for root in modules:
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                kind = {nn.Conv2d: "conv", nn.MaxPool2d: "max-pool", nn.AvgPool2d: "avg-pool"}[type(m)]
                k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
                found.append(Window(kind, k, s, p, bool(getattr(m, "ceil_mode", False))))
    return found


def output_size(n: int, windows: Sequence[Window]) -> int:
    """Spatial size after the windows; 0 if some layer gets an input too small for it."""
    for w in windows:
        n = w.out(n)
        if n < 1:
            return 0
    return n


def smallest_input(windows: Sequence[Window], final: int = 1) -> int:
    """The smallest input size that survives every window and ends at least `final` x `final`."""
    n = 1
    while output_size(n, windows) < final:
        n += 1
    return n


def describe(windows: Sequence[Window]) -> str:
    """The size-reducing layers in words, e.g. '5 max-pools 2x2/2' for VGG."""
    shrinking = [(w.kind, w.kernel, w.stride) for w in windows if w.shrinks]
    parts = []
    for (kind, k, s), run in itertools.groupby(shrinking):
        count = len(list(run))
        parts.append(f"{count} {kind}s {k}x{k}/{s}" if count > 1 else f"{kind} {k}x{k}/{s}")
    return ", ".join(parts)


# --- The input check -----------------------------------------------------------------------------------

def check_input(x: torch.Tensor, name: str, in_channels: int, min_size: int, size_reason: str) -> torch.Tensor:
    """Refuse a batch the net cannot take, with the reason and the fix in one line; returns x.

    A free function that returns its input, so that it survives every way of running the net: eager,
    TorchScript (which compiles it), torch.fx and torchvision's feature extraction (which keep it as one
    call in the graph, see the `torch.fx.wrap` below, instead of tracing its `if`s), torch.export.
    """
    if x.dim() != 4:
        shape = ", ".join([str(s) for s in x.shape])
        raise ClassicNetsError(f"{name} takes a batch N x C x H x W; got a tensor of shape ({shape}): "
                               f"add a batch dimension with x.unsqueeze(0)")
    if x.shape[1] != in_channels:
        raise ClassicNetsError(f"{name} was built for {in_channels}-channel input; got {x.shape[1]} "
                               f"channels: build it with in_channels={x.shape[1]}")
    h, w = x.shape[2], x.shape[3]
    if h < min_size or w < min_size:
        raise ClassicNetsError(too_small(name, min_size, size_reason, f"{h}x{w}"))
    return x


torch.fx.wrap("check_input")


def too_small(name: str, min_size: int, size_reason: str, got: str) -> str:
    m = min_size
    return (f"{name} needs inputs of at least {m}x{m} ({size_reason}); got {got}: "
            f"resize or pad the images to {m}x{m} or larger")


# --- Feature maps ---------------------------------------------------------------------------------------

class FeatureInfo(list):
    """The net's feature maps worth tapping, one dict per stage: num_chs, reduction, module (timm's shape).

    A list of dicts, with timm's accessors, so code written for timm's `feature_info` works as is.
    """

    def channels(self, idx: int | None = None) -> list[int] | int:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> list[int] | int:
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None) -> list[str] | str:
        return self._get("module", idx)

    def get_dicts(self) -> list[dict]:
        return [dict(d) for d in self]

    def _get(self, key: str, idx: int | None):
        return [d[key] for d in self] if idx is None else self[idx][key]


def stage_ends(named: Sequence[tuple[str, nn.Module]], in_channels: int) -> FeatureInfo:
    """The output of the last layer before each downsampling, and the chain's final output.

    `named` is the main path as (module name, module) in order; the reduction is the product of the strides
    before the tap (4 for AlexNet's first ReLU, 32 at VGG's last pool), timm's nominal figure.
    """
    info, reduction, channels, previous = FeatureInfo(), 1, in_channels, None
    for name, module in named:
        stride = math.prod(w.stride for w in windows_of([module]))
        if stride > 1 and previous is not None and (not info or info[-1]["module"] != previous):
            info.append({"num_chs": channels, "reduction": reduction, "module": previous})
        reduction *= stride
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]  # the module itself included
        if hasattr(module, "out_channels"):  # a conv, or a block that says its width (Inception)
            channels = int(module.out_channels)
        elif convs:
            channels = convs[-1].out_channels
        previous = name
    if previous is not None and (not info or info[-1]["module"] != previous):
        info.append({"num_chs": channels, "reduction": reduction, "module": previous})
    return info


# --- The base class -------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassicNet(nn.Module):
    """What every classicnets model has: its build facts, the input check, the features/head split, and the
    surface timm and torchvision code expects (num_classes, num_features, get_classifier, reset_classifier,
    pretrained_cfg, feature_info).

    Subclasses set `features`-like modules, `avgpool`, `flatten` and `classifier` (or override
    `forward_features` / `forward_head` / `head_layers` / the classifier methods), call `set_input_limits`
    once the body exists, and set `num_features` (channels of the final feature map) and `head_hidden_size`
    (the width the class layer reads).
    """

    aux_weight = 0.0  # weight of auxiliary losses; GoogLeNet with aux heads sets 0.3
    paper = ""
    # Python-only facts TorchScript must not compile.
    __jit_unused_properties__ = ("num_classes", "pretrained_cfg", "default_cfg", "feature_info")

    def __init__(self, name: str, *, num_classes: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.input_size = input_size
        self.min_input_size = 1
        self.size_reason = ""
        self.weights_cfg: dict = {}  # what loaded weights say about themselves (mean, std, categories...)

    def set_input_limits(self, windows: Sequence[Window], *extra: Sequence[Window]) -> int:
        """Derive min_input_size from the layers' windows (and any side paths), check input_size
        against it, and return the final feature-map size at input_size."""
        self.min_input_size = max(smallest_input(w) for w in (windows, *extra))
        self.windows = list(windows)  # the main path's convs and pools, for size arithmetic elsewhere
        self.size_reason = describe(windows)
        if not isinstance(self.input_size, int) or isinstance(self.input_size, bool):
            raise ClassicNetsError(f"{self.name}: input_size must be an integer such as 224; "
                                   f"got {self.input_size!r}")
        if self.input_size < self.min_input_size:
            raise ClassicNetsError(too_small(self.name, self.min_input_size, self.size_reason,
                                             f"input_size={self.input_size}"))
        return output_size(self.input_size, windows)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Refuse a batch the net cannot take, with the reason and fix in one line; returns x. Subclasses
        call this, not the function: torch.fx keeps calls to it whole only from this module."""
        return check_input(x, self.name, self.in_channels, self.min_input_size, self.size_reason)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(x)))

    def head_layers(self) -> list[nn.Module]:
        """The layers applied after avgpool + flatten, in order (what the dense form converts)."""
        return list(self.classifier) if isinstance(self.classifier, nn.Sequential) else [self.classifier]

    # --- The classifier, as timm names it ---

    def get_classifier(self) -> nn.Module:
        """The layer that gives the class scores (the head's last layer)."""
        return self.classifier[-1] if isinstance(self.classifier, nn.Sequential) else self.classifier

    def set_classifier(self, layer: nn.Module) -> None:
        if isinstance(self.classifier, nn.Sequential):
            self.classifier[-1] = layer
        else:
            self.classifier = layer

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A fresh class layer for `num_classes` (0: none, the head then returns its hidden features)."""
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.head_hidden_size, num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the class layer with a freshly initialised one for `num_classes` classes (timm's call);
        0 removes it, so the net returns the features the class layer would read."""
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ClassicNetsError(f"{self.name}: reset_classifier takes a number of classes >= 0; "
                                   f"got {num_classes!r}")
        if global_pool not in (None, "", "avg"):
            raise ClassicNetsError(f"{self.name}: reset_classifier keeps the net's own pooling; "
                                   f"global_pool={global_pool!r} is not supported")
        layer = self.new_classifier(num_classes)
        like = next(self.parameters(), None)
        if like is not None:
            layer = layer.to(device=like.device, dtype=like.dtype)
        self.set_classifier(layer)

    @property
    def num_classes(self) -> int:
        """Read off the class layer, so it stays true after reset_classifier or a hand-made head swap."""
        for m in reversed(list(self.get_classifier().modules())):
            if isinstance(m, nn.Linear):
                return m.out_features
            if isinstance(m, nn.Conv2d):
                return m.out_channels
        return 0

    @property
    def pretrained_cfg(self) -> dict:
        """What a user of the net needs to feed it (timm's pretrained_cfg): input size, normalisation,
        classes, the paper; the weights' own facts (issue: weights) override the defaults."""
        c, s, m = self.in_channels, self.input_size, self.min_input_size
        mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if c == 3
                     else ((sum(IMAGENET_MEAN) / 3,) * c, (sum(IMAGENET_STD) / 3,) * c))
        first_conv = next(name for name, mod in self.named_modules() if isinstance(mod, nn.Conv2d))
        cfg = {"architecture": self.name, "paper": self.paper, "num_classes": self.num_classes,
               "input_size": (c, s, s), "min_input_size": (c, m, m), "mean": mean, "std": std,
               "interpolation": "bilinear", "crop_pct": 0.875, "first_conv": first_conv,
               "classifier": self.classifier_name(), "weights": None}
        cfg.update(self.weights_cfg)
        return cfg

    @property
    def default_cfg(self) -> dict:  # timm's older name
        return self.pretrained_cfg

    def classifier_name(self) -> str:
        layer = self.get_classifier()
        return next(name for name, mod in self.named_modules() if mod is layer)

    def class_layer_names(self) -> list[str]:
        """Every layer that gives class scores (GoogLeNet adds its aux heads' last layers): what another
        number of classes renews, and what fine-tuning trains at the head's learning rate."""
        return [self.classifier_name()]

    def head_names(self) -> list[str]:
        """The modules after the body (VGG's and AlexNet's whole `classifier`): weights whose head has another
        structure (VGG's FC head into a GAP net) leave these to start afresh."""
        return ["classifier"] if isinstance(getattr(self, "classifier", None), nn.Sequential) \
            else self.class_layer_names()

    def train(self, mode: bool = True) -> ClassicNet:
        """As nn.Module.train, except that a batch-norm layer whose parameters are frozen stays in eval mode:
        a frozen body (a linear probe) keeps its running statistics instead of drifting to the new data's."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None \
                        and not m.weight.requires_grad:
                    m.eval()
        return self

    @property
    def feature_info(self) -> FeatureInfo:
        """The stage-end feature maps (channels, reduction, module name), as timm's feature_info."""
        return stage_ends([(f"features.{n}", m) for n, m in self.features.named_children()], self.in_channels)
