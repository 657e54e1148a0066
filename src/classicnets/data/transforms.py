"""Batched image transforms on the training device: plain functions on N×C×H×W tensors.

The tutorials resize one PIL image at a time in DataLoader workers; here each step is one tensor
operation over the whole batch, on whatever device the batch lives on. Pixel values stay in 0..255
through the geometric steps (resize, crop, flip) and `normalize` is the single step that produces
float32; on CPU the geometric steps even stay uint8, which torch resizes with a fast dedicated kernel and
copies four times cheaper (measured on 2 cores, 128 Fashion-MNIST images 28->224: uint8 resize 7 ms,
float32 resize 9-15 ms).

Randomness comes only from the `generator` argument, so a seeded generator reproduces a batch exactly;
the loaders derive one per batch from (seed, epoch, batch, rank).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from classicnets.errors import ClassicNetsError

# Per-sample crops on CPU: copying slices in a loop beats one vectorised gather for large images
# (measured, 128 images, 1 thread: 224x224 loop 5 ms vs gather 10-22 ms; 32x32 gather 0.2 ms vs loop 0.5 ms).
LOOP_CROP_FROM_PIXELS = 64 * 64


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def random_ints(low: int, high: int, n: int, generator, device) -> torch.Tensor:
    """n integers uniform in [low, high], drawn on the generator's device, returned on `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(low, high + 1, (n,), generator=generator, device=gen_device).to(device)


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    # Antialiasing only matters when shrinking (it spreads the filter over the pixels being merged).
    antialias = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    if x.dtype == torch.uint8 and x.device.type != "cpu":
        x = x.float()  # only the CPU has a uint8 bilinear kernel; elsewhere work in float, still 0..255
    return F.interpolate(x, size=size, mode="bilinear", antialias=antialias, align_corners=False)


def resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bilinear resize to size×size (or (h, w)), antialiased when shrinking, like torchvision's Resize."""
    return _interpolate(x, _size2(size))


def resize_short_side(x: torch.Tensor, side: int) -> torch.Tensor:
    """Rescale so the shorter side is `side`, keeping the aspect ratio (the VGG paper's isotropic scaling)."""
    h, w = x.shape[-2:]
    if h <= w:
        return _interpolate(x, (side, max(side, round(w * side / h))))
    return _interpolate(x, (max(side, round(h * side / w)), side))


def center_crop(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    th, tw = _size2(size)
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ClassicNetsError(f"cannot centre-crop {th}x{tw} from {h}x{w} images: resize them first")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


def crop_at(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int | Sequence[int]
) -> torch.Tensor:
    """Sample k cropped at (top[k], left[k]) to size×size, all in one go."""
    th, tw = _size2(size)
    n, c, h, w = x.shape
    if x.device.type == "cpu" and th * tw >= LOOP_CROP_FROM_PIXELS:
        out = x.new_empty((n, c, th, tw))
        for k, (i, j) in enumerate(zip(top.tolist(), left.tolist())):
            out[k] = x[k, :, i : i + th, j : j + tw]
        return out
    # Rows: an index_select of whole rows; columns: a strided view of every window, one picked per row.
    rows = (torch.arange(n * c, device=x.device).view(n, c, 1) * h + top.view(n, 1, 1)
            + torch.arange(th, device=x.device)).reshape(-1)
    picked = x.reshape(n * c * h, w).index_select(0, rows)
    windows = picked.as_strided((picked.shape[0], w - tw + 1, tw), (w, 1, 1))
    starts = left.repeat_interleave(c * th)
    return windows[torch.arange(picked.shape[0], device=x.device), starts].view(n, c, th, tw)


def random_crop(
    x: torch.Tensor, size: int | Sequence[int], *, padding: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad by `padding` then crop size×size at an independent random offset per sample."""
    th, tw = _size2(size)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ClassicNetsError(
            f"cannot crop {th}x{tw} from {h}x{w} images (padding {padding}): resize them first"
        )
    n = x.shape[0]
    top = random_ints(0, h - th, n, generator, x.device)
    left = random_ints(0, w - tw, n, generator, x.device)
    return crop_at(x, top, left, (th, tw))


def random_flip(x: torch.Tensor, *, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability p."""
    gen_device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=gen_device) < p).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def scale_jitter(
    x: torch.Tensor, size: int, s_min: int, s_max: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The VGG paper's training-scale jittering: short side to S ~ U[s_min, s_max], then a random crop.

    One S per batch, not per image: a batch must share a shape to be resized in one call, and over an
    epoch every S in the range is still drawn (per-image S would cost a Python loop of resizes).
    """
    s = int(random_ints(s_min, s_max, 1, generator, torch.device("cpu"))[0])
    return random_crop(resize_short_side(x, s), size, generator=generator)


# torchvision's RandomResizedCrop tries this many boxes per image before falling back to a centre crop.
RRC_TRIES = 10


def _rrc_pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ClassicNetsError(f"random resized crop {name} must be a (min, max) pair, got {value!r}") from None
    return lo, hi


def _check_rrc(size, scale, ratio) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    th, tw = _size2(size)
    if th < 1 or tw < 1:
        raise ClassicNetsError(f"random resized crop size must be >= 1, got {size}")
    s0, s1 = _rrc_pair("scale", scale)
    if not 0 < s0 <= s1 <= 1:
        raise ClassicNetsError(
            f"random resized crop scale (area fractions) needs 0 < min <= max <= 1, got ({s0:g}, {s1:g})"
        )
    r0, r1 = _rrc_pair("ratio", ratio)
    if not 0 < r0 <= r1:
        raise ClassicNetsError(f"random resized crop ratio (width/height) needs 0 < min <= max, got ({r0:g}, {r1:g})")
    return (th, tw), (s0, s1), (r0, r1)


def random_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """n boxes (top, left, h, w) in a height×width image, as an n×4 int64 tensor on `device`.

    torchvision's RandomResizedCrop rule, vectorised: per image RRC_TRIES candidates with area fraction
    ~ U[scale] and aspect ratio w/h log-uniform in `ratio`, sides rounded to whole pixels; the first that
    fits is placed at a uniform random offset, and an image none of whose candidates fit gets the centre
    crop of the whole image clamped to the ratio range. Drawn on the generator's device without a host sync.
    """
    _, (s0, s1), (r0, r1) = _check_rrc(1, scale, ratio)
    gen_device = generator.device if generator is not None else torch.device(device)
    u = torch.rand(n, 2 * RRC_TRIES + 2, generator=generator, device=gen_device).to(device)
    area = (s0 + (s1 - s0) * u[:, :RRC_TRIES]) * float(height * width)
    lr0, lr1 = math.log(r0), math.log(r1)
    aspect = torch.exp(lr0 + (lr1 - lr0) * u[:, RRC_TRIES : 2 * RRC_TRIES])
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # argmax gives the first of equal maxima
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    if width / height < r0:  # the fallback: the whole image, or its centre at the nearest allowed ratio
        fh, fw = min(height, max(1, round(width / r0))), width
    elif width / height > r1:
        fh, fw = height, min(width, max(1, round(height * r1)))
    else:
        fh, fw = height, width
    found = fits.any(1)
    h, w = torch.where(found, h, float(fh)), torch.where(found, w, float(fw))
    top = torch.minimum((u[:, -2] * (height - h + 1)).floor(), height - h)  # randint(0, height - h)
    left = torch.minimum((u[:, -1] * (width - w + 1)).floor(), width - w)
    top = torch.where(found, top, float((height - fh) // 2))
    left = torch.where(found, left, float((width - fw) // 2))
    return torch.stack([top, left, h, w], 1).to(torch.int64)


def resized_crop_at(x: torch.Tensor, boxes: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Sample k's box boxes[k] = (top, left, h, w) resized bilinearly to size×size.

    On CPU: a loop over the samples, each box sliced (a view) and resized by F.interpolate (bilinear,
    align_corners=False, antialiased when shrinking; uint8 stays uint8 through torch's dedicated kernel),
    which is torchvision's tensor `resized_crop(img, top, left, h, w, size, antialias=True)`: equal to it bit
    for bit on uint8 where torchvision too uses that kernel (AVX2/AVX-512 or ARM CPUs), and on float within
    ~1e-3 (torch's plain bilinear kernel, used here when enlarging, rounds unlike its antialiasing one). The uint8 kernel makes it ~4x faster than
    `resized_crop_grid_sample` on CPU (measured, 2 threads, 256 uint8 images 3x256x256 -> 224: 110 ms vs
    460 ms; torchvision's RandomResizedCrop in a per-image loop 140 ms).

    Elsewhere (GPU): `resized_crop_grid_sample`, one kernel for the whole batch instead of a launch per
    sample. It does not antialias when shrinking, so CPU and GPU outputs differ slightly for shrunk boxes
    (and, for any box, at its edge, where the grid also blends the pixels just outside the box).
    """
    th, tw = _size2(size)
    if x.device.type != "cpu":
        return resized_crop_grid_sample(x, boxes, (th, tw))
    src = x if x.dtype == torch.uint8 or x.is_floating_point() else x.float()  # interpolate has no int kernel
    out = src.new_empty((x.shape[0], x.shape[1], th, tw))
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        out[k] = _interpolate(src[k : k + 1, :, top : top + h, left : left + w], (th, tw))[0]
    return out


def resized_crop_grid_sample(x: torch.Tensor, boxes: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """`resized_crop_at` in one F.affine_grid + F.grid_sample over the whole batch: its path on GPU.

    Every sample has its own box size, so a batched F.interpolate cannot do it; instead each sample gets an
    affine sampling grid mapping the output onto its box. Output pixels are sampled where
    F.interpolate(crop, align_corners=False) samples them; near the box's edge the bilinear neighbours are
    the image's own pixels beyond the box (interpolate clamps to the crop's edge instead), and coordinates
    are clamped only at the image's border, as interpolate does there. uint8 is resampled in float and
    rounded back.

    grid_sample does not antialias: when a box is shrunk (box side > size) each output pixel blends only
    the 2×2 source pixels nearest its centre, not all the pixels it covers, so fine detail and noise can
    alias (moiré, jagged edges) instead of being averaged away, where the CPU path (and torchvision)
    average them. Enlarging (box side < size, the usual case when fine-tuning on small images) is
    unaffected but for the edge pixels.
    """
    th, tw = _size2(size)
    n, c, height, width = x.shape
    src = x if x.is_floating_point() else x.float()
    top, left, h, w = boxes.to(device=x.device, dtype=src.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=src.dtype, device=x.device)  # output [-1, 1] -> the box in the image
    theta[:, 0, 0], theta[:, 0, 2] = w / width, (2 * left + w) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, c, th, tw], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else out


def random_resized_crop(
    x: torch.Tensor,
    size: int | Sequence[int],
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop over a batch: per sample a random box (area fraction in `scale`,
    aspect ratio w/h in `ratio`; see `random_resized_crop_boxes`) resized bilinearly to size×size.
    uint8 in, uint8 out (rounded), so later steps still see 0..255; float in, float out.

    The boxes are resampled by `resized_crop_at`: on CPU a per-sample loop that equals torchvision's tensor
    RandomResizedCrop for the same boxes (antialiased when shrinking); on GPU one grid_sample for the whole
    batch, which does not antialias shrunk boxes (see `resized_crop_grid_sample`), so the two differ slightly.
    """
    (th, tw), scale, ratio = _check_rrc(size, scale, ratio)
    n, _, height, width = x.shape
    boxes = random_resized_crop_boxes(n, height, width, scale=scale, ratio=ratio, generator=generator,
                                      device=x.device)
    return resized_crop_at(x, boxes, (th, tw))


def normalize(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float] | None,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """0..255 pixels -> float32 (x/255 - mean) / std, per channel; std=None subtracts the mean only
    (the VGG paper's sole preprocessing). mean and std are in [0, 1] units, as `ArrayDataset.stats()`
    gives them."""
    c = x.shape[1]
    std = std if std is not None else [1.0] * len(mean)
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise ClassicNetsError(
            f"normalisation has {len(mean)} mean / {len(std)} std values for {c}-channel images: "
            f"give 1 or {c}"
        )
    if any(s <= 0 for s in std):
        raise ClassicNetsError(f"normalisation std must be positive, got {list(std)}")
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=x.device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(1, -1, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
    torch.mul(x, scale, out=out)
    return out.add_(shift)


def _check_stats(mean, std) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
    if mean is None:
        raise ClassicNetsError("a transform needs the training set's mean (dataset.stats()); pass mean=...")
    mean = tuple(float(m) for m in ([mean] if isinstance(mean, (int, float)) else mean))
    if std is not None:
        std = tuple(float(s) for s in ([std] if isinstance(std, (int, float)) else std))
    return mean, std


def _match_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)  # grayscale shown to an RGB net: the same plane thrice
    raise ClassicNetsError(f"cannot turn {x.shape[1]}-channel images into {channels} channels")


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation; see `train_transform`."""

    size: int
    crop_padding: int
    flip: bool
    scale_jitter: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...] | None
    channels: int | None = None
    channels_last: bool = False
    random_resized_crop: tuple[float, float] | None = None

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.random_resized_crop is not None:
            x = random_resized_crop(x, self.size, scale=self.random_resized_crop, generator=generator)
            if self.flip:
                x = random_flip(x, generator=generator)
            x = _match_channels(x, self.channels)
            return normalize(x, self.mean, self.std, channels_last=self.channels_last)
        if self.flip:  # on the small stored images: mirroring commutes with resizing (and, in distribution,
            x = random_flip(x, generator=generator)  # with random crops), at 1/64 of the cost at 224
        if self.scale_jitter is not None:
            x = scale_jitter(x, self.size, *self.scale_jitter, generator=generator)
        elif self.crop_padding:  # zero padding means black pixels: crop before normalising
            x = random_crop(resize(x, self.size), self.size, padding=self.crop_padding, generator=generator)
        else:
            return _normalize_then_resize(x, self.size, self.mean, self.std, self.channels,
                                          self.channels_last)
        x = _match_channels(x, self.channels)
        return normalize(x, self.mean, self.std, channels_last=self.channels_last)


def _normalize_then_resize(x, size, mean, std, channels, channels_last) -> torch.Tensor:
    """normalize(resize(x)) computed as resize(normalize(x)): equal, since bilinear weights sum to one,
    but the float work happens at the stored size and the output is written once (28->224: ~35% faster)."""
    x = normalize(_match_channels(x, channels), mean, std)
    x = resize(x, size)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic evaluation preprocessing; see `eval_transform`."""

    size: int
    resize: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...] | None
    channels: int | None = None
    channels_last: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.resize is None:
            return _normalize_then_resize(x, self.size, self.mean, self.std, self.channels,
                                          self.channels_last)
        x = center_crop(resize_short_side(x, self.resize), self.size)
        x = _match_channels(x, self.channels)
        return normalize(x, self.mean, self.std, channels_last=self.channels_last)


def train_transform(
    size: int,
    *,
    crop_padding: int = 0,
    flip: bool = False,
    scale_jitter: tuple[int, int] | None = None,
    mean: Sequence[float],
    std: Sequence[float] | None,
    channels: int | None = None,
    channels_last: bool = False,
    random_resized_crop: tuple[float, float] | None = None,
) -> TrainTransform:
    """uint8 batch -> normalised float32 batch of size×size, randomised by the generator passed per call.

    Without scale_jitter: resize to size×size (the tutorials' Resize), then, if crop_padding, pad and
    random-crop back to size; with scale_jitter=(S_min, S_max): rescale the short side to a random S and
    random-crop size×size (VGG paper, section 3.1); with random_resized_crop=(min, max) area fractions
    (ImageNet's (0.08, 1.0)): torchvision's RandomResizedCrop to size×size instead, for fine-tuning from
    ImageNet weights. flip mirrors half the samples. channels=3 repeats a grayscale plane for an RGB net.
    std=None: mean subtraction only.
    """
    if size < 1 or crop_padding < 0:
        raise ClassicNetsError(
            f"transform size must be >= 1 and crop padding >= 0, got {size} and {crop_padding}"
        )
    if random_resized_crop is not None:
        for name, value in (("scale_jitter", scale_jitter), ("crop_padding", crop_padding or None)):
            if value is not None:
                raise ClassicNetsError(
                    f"random_resized_crop and {name} both choose the crop: pass only one "
                    f"(drop {name}, or random_resized_crop=None)"
                )
        _, random_resized_crop, _ = _check_rrc(size, random_resized_crop, (3 / 4, 4 / 3))
    if scale_jitter is not None:
        s_min, s_max = (int(s) for s in scale_jitter)
        if not size <= s_min <= s_max:
            raise ClassicNetsError(
                f"scale jitter needs size <= S_min <= S_max; got size {size}, S in [{s_min}, {s_max}]: "
                f"e.g. --scale-jitter {max(size, s_min)},{max(size, s_min, s_max)}"
            )
        scale_jitter = (s_min, s_max)
    mean, std = _check_stats(mean, std)
    return TrainTransform(size, crop_padding, flip, scale_jitter, mean, std, channels, channels_last,
                          random_resized_crop)


def eval_transform(
    size: int,
    *,
    resize: int | None = None,
    mean: Sequence[float],
    std: Sequence[float] | None,
    channels: int | None = None,
    channels_last: bool = False,
) -> EvalTransform:
    """uint8 batch -> normalised float32 size×size, deterministically: resize to size×size, or with
    resize=Q rescale the short side to Q and take the centre size×size (ImageNet's 256 -> 224)."""
    if resize is not None and resize < size:
        raise ClassicNetsError(
            f"eval resize {resize} is smaller than the crop size {size}: pass resize >= size"
        )
    mean, std = _check_stats(mean, std)
    return EvalTransform(size, resize, mean, std, channels, channels_last)
