"""Evaluation: the VGG paper's test protocols, and loading a trained net for inference.

The plain test pass over a loader (the trainer's per-epoch test) is `classicnets.metrics.evaluate_loader`;
this module builds the paper's protocols on the same counting (`classicnets.metrics`).

`evaluate` runs the protocols of Simonyan & Zisserman (2015), Sec. 3.2 and 4.2-4.3, on uint8 images:
each test scale Q rescales the short side to Q; the net sees a centre crop, the crop and its flip, or
a grid of crops with flips ("multi-crop"), and/or the whole Q x Q image through the fully convolutional
net ("dense", class score map averaged over space). Soft-max posteriors are averaged over crops, flips,
scales and the two evaluation kinds, as the paper does.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from classicnets.data import transforms
from classicnets.data.dataset import printable
from classicnets.errors import ClassicNetsError
from classicnets.metrics import confusion_matrix, logits_of, per_class_accuracy, topk_correct
from classicnets.models import create_model, model_info
from classicnets.models.dense import to_dense
from classicnets.models.registry import get_entry
from classicnets.models.weights import imagenet_synsets, resolve
from classicnets.training import checkpoint
from classicnets.training.config import PROGRESS
from classicnets.training.threads import adaptive_threads

CROP_MODES = ("center", "flip", "multi")
PROGRESS_LINES = 10  # lines a test pass prints with progress="lines", the last one when it ends


# --- Loading a model for inference ------------------------------------------------------------------------

@dataclass
class InferenceModel:
    """A net in eval mode plus what preparing its inputs needs (from its checkpoint when there is one)."""

    model: torch.nn.Module
    name: str
    classes: list[str]
    in_channels: int
    input_size: int  # the training crop size (224 in the paper)
    resize: int | None  # the short side test images are rescaled to before the centre crop, if not input_size
    mean: list[float] | None  # per channel, [0, 1] units; None: no mean subtraction
    std: list[float] | None  # None: mean subtraction only (the VGG paper)
    data_name: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    test_flip: bool = False  # trained with --test-flip: its test accuracies are the centre crop + flip's
    synsets: list[str] | None = None  # ImageNet-1k's WordNet ids, in class order, for nets with its classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_inference_model(model_or_ckpt, device: str | torch.device | None = None) -> InferenceModel:
    """Accept a checkpoint path (or run dir), a loaded checkpoint dict, an InferenceModel or a bare net."""
    if isinstance(model_or_ckpt, InferenceModel):
        loaded = model_or_ckpt
    elif isinstance(model_or_ckpt, torch.nn.Module):
        m = model_or_ckpt
        missing = [a for a in ("num_classes", "in_channels", "input_size") if not hasattr(m, a)]
        if missing:
            raise ClassicNetsError(
                f"{type(m).__name__} lacks {', '.join(missing)}: pass a classicnets model (create_model(...)) "
                "or set those attributes on the module")
        loaded = InferenceModel(
            model=m, name=getattr(m, "name", type(m).__name__), classes=[str(i) for i in range(m.num_classes)],
            in_channels=int(m.in_channels), input_size=int(m.input_size), resize=None, mean=None, std=None,
        )
    else:
        # load() and build_model() check the file before any net is built: one line naming it if it is bad
        source = None if isinstance(model_or_ckpt, dict) else checkpoint.input_file(model_or_ckpt)
        ckpt = model_or_ckpt if source is None else checkpoint.load(source)
        model = checkpoint.build_model(ckpt, source)
        data = ckpt.get("data") or {}
        num_classes = int(model.num_classes)
        # printable: a name from a file may hold newlines or terminal escapes, and is printed by predict/eval
        classes = [printable(c) for c in (data.get("classes") or [str(i) for i in range(num_classes)])]
        loaded = InferenceModel(
            model=model, name=str(ckpt["model_name"]), classes=classes,
            in_channels=int(data.get("in_channels", model.in_channels)),
            input_size=int(data.get("input_size", model.input_size)),
            resize=data.get("resize"), mean=data.get("mean"), std=data.get("std"),
            data_name=data.get("name"), model_kwargs=dict(ckpt.get("model_kwargs", {})),
            test_flip=bool((ckpt.get("config") or {}).get("test_flip", False)),
        )
    if device is None:  # a net stays where it is; a checkpoint goes to the GPU when there is one
        from_file = not isinstance(model_or_ckpt, (torch.nn.Module, InferenceModel))
        device = ("cuda" if torch.cuda.is_available() else "cpu") if from_file else model_device(loaded.model)
    loaded.model.to(device)
    return loaded


def load_trained_weights(model_name: str, weights: str, device: str | torch.device | None = None,
                         **options) -> InferenceModel:
    """A registered net with trained weights ("imagenet" or a file, as create_model's `weights`) ready for
    predict and eval: the weights' class names (ImageNet's 1,000 categories), input size, test scale and
    mean/std. A classicnets checkpoint or export given as `weights` brings its net's options (width,
    input size, classes) when it is `model_name`'s."""
    found = resolve(model_name, model_info(model_name)["torchvision"], weights)
    if found.cfg.get("architecture") == get_entry(model_name).name:
        options = {**found.options, **options}
    model = create_model(model_name, weights=found, **options)
    new = model.weights_report.new
    if new:  # a class layer the weights do not fill would predict at random
        raise ClassicNetsError(f"{weights} do not fill {model_name}'s class layer ({', '.join(new)}): predict and "
                               f"eval need every layer trained; pass weights for {model.num_classes} classes, or "
                               "the classicnets checkpoint they come from as CHECKPOINT")
    cfg = model.pretrained_cfg
    size = int(cfg["input_size"][1])
    classes = [printable(c) for c in cfg.get("categories") or [str(i) for i in range(model.num_classes)]]
    resize = cfg.get("resize")
    imagenet = bool(cfg.get("weights_url")) and len(classes) == len(imagenet_synsets())  # torchvision's head
    loaded = InferenceModel(
        model=model.eval(), name=model.name, classes=classes, in_channels=int(model.in_channels), input_size=size,
        resize=int(resize) if resize and resize != size else None, mean=list(cfg["mean"]), std=list(cfg["std"]),
        data_name="imagenet" if imagenet else None, model_kwargs=dict(options),
        synsets=list(imagenet_synsets()) if imagenet else None)
    loaded.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return loaded


def match_classes(loaded: InferenceModel, dataset):
    """The data set with its labels renumbered to the net's class indices when its class names are a subset
    of the net's (a folder of some of the classes) or ImageNet synset folders (n01440764 ...) of a net with
    ImageNet's classes; otherwise unchanged (`evaluate` then checks that the two agree)."""
    classes = list(getattr(dataset, "classes", []) or [])
    if not classes or classes == list(loaded.classes):
        return dataset
    indices = None
    if loaded.synsets is not None:
        wanted = {wnid: i for i, wnid in enumerate(loaded.synsets)}
        indices = [wanted[c] for c in classes] if all(c in wanted for c in classes) else None
    if indices is None and loaded.data_name is not None and set(classes) <= set(loaded.classes):
        position = {name: i for i, name in enumerate(loaded.classes)}
        indices = [position[c] for c in classes]
    if indices is None:
        return dataset
    mapping = torch.tensor(indices, dtype=torch.int64)
    return dataclasses.replace(dataset, labels=mapping[dataset.labels.to(torch.int64)], classes=list(loaded.classes))


def model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def prepare(images: torch.Tensor, scale: int, loaded_mean, loaded_std) -> torch.Tensor:
    """uint8 batch -> rescaled (short side `scale`) and normalised float32, exactly as the trainer's test
    transform does it (classicnets.data.transforms), so the default protocol reproduces its accuracy."""
    mean = loaded_mean if loaded_mean is not None else [0.0] * images.shape[1]
    return transforms.normalize(transforms.resize_short_side(images, scale), mean, loaded_std)


# --- Progress of a long test pass -------------------------------------------------------------------------

class PassProgress:
    """How far a test pass is, on stderr (stdout keeps the report), in train's --progress modes: "bar" a
    tqdm bar, "lines" about ten plain lines with the rate and the time left, "none" nothing, "auto" a bar
    when stderr is a terminal, else lines. Multi-crop at several scales runs for minutes: this is the
    only sign of life."""

    def __init__(self, mode: str, images: int, batches: int, what: str = "eval") -> None:
        if mode not in PROGRESS:
            raise ClassicNetsError(f"progress must be one of {', '.join(PROGRESS)}; got {mode!r}")
        self.mode = ("bar" if sys.stderr.isatty() else "lines") if mode == "auto" else mode
        self.images, self.batches, self.what = images, batches, what
        self.start = time.perf_counter()
        self.printed = 0  # lines so far: one each time another 1/PROGRESS_LINES of the batches is done
        self.bar = None
        if self.mode == "bar" and batches:
            self.bar = tqdm(total=images, desc=what, unit="img", leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, images_done: int, batches_done: int) -> None:
        if self.bar is not None:
            self.bar.update(images_done - self.bar.n)
        elif self.mode == "lines" and batches_done * PROGRESS_LINES // self.batches > self.printed:
            self.printed = batches_done * PROGRESS_LINES // self.batches
            print(self.line(images_done, batches_done), file=sys.stderr, flush=True)

    def line(self, images_done: int, batches_done: int) -> str:
        elapsed = time.perf_counter() - self.start
        rate = images_done / elapsed if elapsed > 0 else 0.0
        if batches_done >= self.batches:
            when = f"{tqdm.format_interval(elapsed)} in all"
        else:
            when = f"ETA {tqdm.format_interval((self.images - images_done) / rate)}" if rate else "ETA ?"
        return (f"{self.what}: {images_done:,}/{self.images:,} images (batch {batches_done}/{self.batches}), "
                f"{rate:,.1f} images/s, {when}")

    def note(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- The VGG paper's test protocols ------------------------------------------------------------------------

@dataclass
class ProtocolResult:
    """Errors of one test protocol. Errors and accuracies are fractions in [0, 1]."""

    top1: float
    top5: float  # top-min(5, K)
    per_class: list[float]  # accuracy of each true class
    confusion: torch.Tensor  # K x K int64; rows = true class, columns = predicted
    classes: list[str]
    count: int
    protocol: str  # what was run, in words
    views: int  # network evaluations per image, all scales together
    scales: tuple[int, ...]
    crops: str | None
    dense: bool
    posteriors: torch.Tensor = field(repr=False)  # N x K averaged soft-max posteriors (CPU, float32)

    @property
    def top1_error(self) -> float:  # what the paper reports
        return _error(self.top1, self.count)

    @property
    def top5_error(self) -> float:
        return _error(self.top5, self.count)

    def to_dict(self) -> dict:
        """Plain JSON-ready data (no posteriors)."""
        return {
            "protocol": self.protocol, "scales": list(self.scales), "crops": self.crops, "dense": self.dense,
            "views": self.views, "count": self.count, "top1_error": self.top1_error,
            "top5_error": self.top5_error, "top1": self.top1, "top5": self.top5,
            "per_class": dict(zip(self.classes, self.per_class)), "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }


def _error(accuracy: float, count: int) -> float:
    # From the counts, so 1 - 0.908 prints as 0.092, not 0.09199999999999997.
    return (count - round(accuracy * count)) / count if count else 0.0


def _grid_positions(extent: int, size: int, grid: int) -> list[int]:
    """Distinct top-left offsets of `grid` evenly spaced windows of `size` along `extent`."""
    return sorted({round(i * (extent - size) / (grid - 1)) for i in range(grid)}) if grid > 1 else \
        [(extent - size) // 2]


def _crop_views(x: torch.Tensor, size: int, crops: str, grid: int) -> list[torch.Tensor]:
    """The crop batches the network sees for one rescaled batch."""
    if crops == "center":
        return [transforms.center_crop(x, size)]
    if crops == "flip":
        c = transforms.center_crop(x, size)
        return [c, c.flip(-1)]
    h, w = x.shape[-2:]
    views = []
    for top in _grid_positions(h, size, grid):
        for left in _grid_positions(w, size, grid):
            c = x[..., top:top + size, left:left + size]
            views += [c, c.flip(-1)]
    return views


def _describe(scales: Sequence[int], size: int, crops: str | None, dense: bool, flip: bool, grid: int,
              views_per_scale: list[int]) -> str:
    scale_text = (f"single-scale Q={scales[0]}" if len(scales) == 1
                  else "multi-scale Q={" + ",".join(map(str, scales)) + "}")
    parts = []
    if crops == "center":
        parts.append(f"centre {size}x{size} crop")
    elif crops == "flip":
        parts.append(f"centre {size}x{size} crop + its flip")
    elif crops == "multi":
        parts.append(f"multi-crop ({grid}x{grid} grid of {size}x{size} crops, each with its flip)")
    if dense:
        parts.append("dense (whole image" + (" + its flip" if flip else "") + ", score map averaged)")
    views = sum(views_per_scale)
    text = f"{scale_text}: {' + '.join(parts)}; {views} view{'s' if views != 1 else ''} per image"
    over = (["views"] if max(views_per_scale) > 1 else []) + (["scales"] if len(scales) > 1 else []) + (
        ["the two kinds"] if len(parts) > 1 else [])
    if over:
        text += ", soft-max posteriors averaged over " + (
            ", ".join(over[:-1]) + " and " + over[-1] if len(over) > 1 else over[0])
    return text

def evaluate(
    model_or_ckpt,
    dataset,
    *,
    train_size: int | None = None,
    scales: Sequence[int] | None = None,
    crops: str | None = "center",
    dense: bool = False,
    flip: bool | None = None,
    grid: int = 5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: str = "none",
    adapt_threads: bool = False,
) -> ProtocolResult:
    """Test a net on an ArrayDataset (uint8 N x C x H x W) with the VGG paper's protocols (Sec. 3.2, 4.2-4.3).

    For each test scale Q the images are rescaled isotropically to a short side of Q. Then
    `crops` = "center" (one train_size crop), "flip" (the centre crop and its mirror), "multi" (a grid x grid
    regular grid of crops, each with its mirror: 50 views per scale, as the paper) or None (no crops);
    `dense=True` also applies the fully convolutional net to the whole image and averages its class score
    map over space. `flip` says whether the dense net also sees the mirrored image; by default it does
    unless crops="center". Soft-max posteriors are averaged over views, then scales, then the two kinds
    (crops and dense), as the paper does.

    `model_or_ckpt` is a checkpoint path / dict (its input size, test scale, mean and std are the defaults)
    or a net (then pass mean/std as in training, in [0, 1] units; std=None subtracts the mean only).
    `channels_last` runs the convolutions in NHWC layout, faster on a CPU (measured, VGG-11-BN width 1/4,
    1 thread: 2x for 32x32 centre crops, 1.3x for multi-crop + dense at Q=32,40,48); the net is put back in
    its usual layout afterwards. `progress` shows how far the pass is on stderr: "bar", "lines", "auto" or
    "none" (see `PassProgress`). `adapt_threads` lets `training.threads.AdaptiveThreads` lower the CPU
    threads while another program is busy (`classicnets eval` without --threads); the count is put back.
    """
    loaded = load_inference_model(model_or_ckpt, device)
    model = loaded.model
    dev = model_device(model)
    size = int(train_size or loaded.input_size)
    scales = tuple(int(q) for q in (scales or (loaded.resize or size,)))
    mean = loaded.mean if mean is None else list(mean)
    std = loaded.std if std is None else list(std)
    crops = None if crops in (None, "none") else crops
    if crops is not None and crops not in CROP_MODES:
        raise ClassicNetsError(f"crops must be one of none, {', '.join(CROP_MODES)}; got {crops!r}")
    if crops is None and not dense:
        raise ClassicNetsError("nothing to evaluate: pass crops='center', 'flip' or 'multi', or dense=True")
    if grid < 1:
        raise ClassicNetsError(f"grid must be 1 or more (the paper uses 5); got {grid}")
    if batch_size < 1:
        raise ClassicNetsError(f"batch_size must be 1 or more; got {batch_size}")
    too_small = [q for q in scales if q < size]
    if too_small:
        raise ClassicNetsError(
            f"test scale {too_small[0]} is below the training size {size}: every scale must be at least "
            f"{size} so a {size}x{size} crop (or the dense net's window) fits; pass --scales {size} or larger")
    flip = (crops != "center") if flip is None else bool(flip)
    dataset = match_classes(loaded, dataset)
    _check_dataset(loaded, dataset)

    num_classes = loaded.num_classes
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dense_model = None
    if dense:
        dense_model = to_dense(model).eval()
    was_training = model.training
    model.eval()
    images, labels = dataset.images, dataset.labels
    n = int(labels.shape[0])
    posteriors = torch.zeros(n, num_classes, dtype=torch.float32)
    views_per_scale: list[int] = []
    shown = PassProgress(progress, n, -(-n // batch_size))
    threads_before = torch.get_num_threads()
    governor = adaptive_threads(None, device=dev, say=shown.note) if adapt_threads else None
    starts = range(0, n, batch_size)
    if governor is not None:
        starts = governor.watch(starts, images_of=lambda start: min(batch_size, n - start))

    def softmax_of(net, x, spatial_mean: bool) -> torch.Tensor:
        ctx = torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with ctx:
            scores = logits_of(net(x.contiguous(memory_format=layout)))
        scores = scores.float()
        if spatial_mean:  # dense: the class score map, averaged over space before the soft-max
            scores = scores.mean(dim=(2, 3))
        return scores.softmax(dim=1)

    try:
        with torch.inference_mode():
            for start in starts:
                x = images[start:start + batch_size].to(dev, non_blocking=True)
                if x.shape[1] != loaded.in_channels:  # gray images for an RGB net: R = G = B, as predict does
                    x = x.expand(-1, loaded.in_channels, -1, -1)
                kinds = []
                crop_post = torch.zeros(x.shape[0], num_classes, device=dev)
                dense_post = torch.zeros_like(crop_post)
                counts = []
                for q in scales:
                    xq = prepare(x, q, mean, std)
                    views = 0
                    if crops is not None:
                        crop_views = _crop_views(xq, size, crops, grid)
                        crop_post += sum(softmax_of(model, v, False) for v in crop_views) / (
                            len(crop_views) * len(scales))
                        views += len(crop_views)
                    if dense_model is not None:
                        whole = [xq, xq.flip(-1)] if flip else [xq]
                        dense_post += sum(softmax_of(dense_model, v, True) for v in whole) / (
                            len(whole) * len(scales))
                        views += len(whole)
                    counts.append(views)
                if crops is not None:
                    kinds.append(crop_post)
                if dense_model is not None:
                    kinds.append(dense_post)
                posteriors[start:start + x.shape[0]] = (sum(kinds) / len(kinds)).cpu()
                views_per_scale = counts
                shown.update(start + x.shape[0], start // batch_size + 1)
    finally:
        shown.close()
        torch.set_num_threads(threads_before)  # what adapt_threads may have changed
        model.train(was_training)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)

    labels = labels.to(torch.int64).cpu()
    confusion = confusion_matrix(labels, posteriors.argmax(1), num_classes) if n else \
        torch.zeros(num_classes, num_classes, dtype=torch.int64)
    count = max(n, 1)
    top1 = int(confusion.diag().sum()) / count
    top5 = int(topk_correct(posteriors, labels, 5)) / count if n else 0.0
    if not views_per_scale:  # an empty data set: report what would have run
        views_per_scale = [0] * len(scales)
    return ProtocolResult(
        top1=top1, top5=top5,
        per_class=per_class_accuracy(confusion), confusion=confusion, count=n,
        classes=list(getattr(dataset, "classes", None) or loaded.classes),
        protocol=_describe(scales, size, crops, dense, flip, grid, views_per_scale),
        views=sum(views_per_scale), scales=scales, crops=crops, dense=dense, posteriors=posteriors,
    )


def _check_dataset(loaded: InferenceModel, dataset) -> None:
    """The data must match the net: same channels and the same classes."""
    data_name = getattr(dataset, "name", "the data set")
    net = f"{loaded.name} (trained on {loaded.data_name})" if loaded.data_name else loaded.name
    channels = int(dataset.images.shape[1])
    if channels != loaded.in_channels and not (channels == 1 and loaded.in_channels == 3):
        raise ClassicNetsError(
            f"{data_name} has {channels}-channel images but {net} takes {loaded.in_channels}-channel input: "
            "evaluate it on a data set like the one it was trained on")
    classes = list(getattr(dataset, "classes", []) or [])
    if classes and len(classes) != loaded.num_classes:
        raise ClassicNetsError(
            f"{data_name} has {len(classes)} classes but {net} predicts {loaded.num_classes}: "
            "evaluate it on a data set with the same classes")
    named = loaded.data_name is not None  # a checkpoint knows its class names; a bare net only counts them
    if classes and named and classes != list(loaded.classes):
        raise ClassicNetsError(
            f"{data_name}'s classes ({', '.join(classes[:3])}, ...) differ from those {net} was trained on "
            f"({', '.join(loaded.classes[:3])}, ...): evaluate it on a data set with the same classes")
    labels = dataset.labels
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= loaded.num_classes):
        raise ClassicNetsError(
            f"{data_name} has labels outside 0..{loaded.num_classes - 1}, the classes {net} predicts")
