"""Image folders: one subfolder per class, read into an `ArrayDataset` or streamed from disk.

Layout: PATH/<class>/<image> (a seeded, per-class `val_fraction` is held out as "val"; "all" is every image), or
PATH/train/<class>/... with PATH/val/ (or PATH/test/) beside it. Decisions, made once for a whole folder:
  * channels: if any image is colour, every image is decoded as RGB (grayscale ones replicated);
    else all are 1-channel. Alpha is dropped.
  * size: if all images share one size it is kept; otherwise each is rescaled (short side, antialiased)
    and centre-cropped to `image_size` (default: the median short side, at most 256, so most images
    are barely touched and a folder of photos stays small in memory). The chosen size is a note.
  * an unreadable image is an error naming it; with skip_bad=True it is skipped and counted. An image
    whose header says it is over MAX_PIXELS, or with sides more than MAX_ASPECT:1 apart, counts as
    unreadable: it is refused from the header, before a pixel is decoded (`open_image`, which predict
    uses too).
  * class names are the folders' names made printable (`printable`): a name that is not UTF-8 shows
    its bytes as \\xNN. A folder that cannot be listed is an error naming it, never "no images".
Headers are read first with PIL (size and mode, no pixel decoding); pixels are decoded with PIL too,
in DataLoader worker processes when the folder is large.
"""

from __future__ import annotations

import os
import re
import shlex
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classicnets.data.dataset import ArrayDataset, printable, stratified_holdout
from classicnets.errors import ClassicNetsError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_DEFAULT_SIZE = 256
# The one cap on every image classicnets decodes (folders, predict), checked on the header: 64 megapixels
# passes any camera's photo (PIL's own bomb limit is 89M); 100:1 passes any panorama and keeps the rescale
# to a net's input (short side to S: S x 100 S) small.
MAX_PIXELS = 64_000_000
MAX_ASPECT = 100
# What PIL raises for a damaged file: OSError (UnidentifiedImageError, truncated data), SyntaxError
# (broken headers), ValueError, and from some plugins EOFError, struct.error, IndexError, KeyError, TypeError.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 ZeroDivisionError)
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",),
              "all": ()}  # "all": every image of a folder without train/ (testing a net trained elsewhere)
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_PARALLEL_FROM = 512  # decode in worker processes from this many files on


@dataclass
class FolderDataset:
    """A folder's file list and the decisions made for it, without its pixels (for streaming)."""

    files: list[str]
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    source: str
    channels: int
    size: tuple[int, int]
    resize: bool  # images differ in size: rescale + centre-crop each to `size`
    skip_bad: bool = False
    checksum: str = "not applicable (image folder)"
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _stats: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def decoder(self) -> ImageDecoder:
        return ImageDecoder(self.files, self.labels, self.channels, self.size, self.resize)

    def stats(self, sample: int = 2000, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std in [0, 1] units from a seeded sample of up to `sample` images."""
        if self._stats is None:
            gen = torch.Generator().manual_seed(seed)
            picks = torch.randperm(len(self), generator=gen)[:sample].sort().values
            sub = self.subset(picks)
            self._stats = sub.to_memory().stats()
        return self._stats

    def subset(self, indices: torch.Tensor) -> FolderDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return FolderDataset(
            files=[self.files[i] for i in idx.tolist()],
            labels=self.labels[idx],
            classes=self.classes,
            name=self.name,
            split=self.split,
            source=self.source,
            channels=self.channels,
            size=self.size,
            resize=self.resize,
            skip_bad=self.skip_bad,
            notes=list(self.notes),
            skipped=list(self.skipped),
        )

    def to_memory(self, num_workers: int | None = None) -> ArrayDataset:
        """Decode every image into one uint8 tensor (refused up front when it would not fit in memory)."""
        decoder = self.decoder()
        if num_workers is None:
            num_workers = min(2, os.cpu_count() or 1) if len(self) >= _PARALLEL_FROM else 0
        need, memory = len(self) * self.channels * self.size[0] * self.size[1], physical_memory()
        if memory is not None and need > memory // 2:
            h, w = self.size
            raise ClassicNetsError(
                f"decoding the {len(self)} images of {printable(self.name)} at {self.channels}x{h}x{w} needs "
                f"{need / 2**30:.1f} GiB, over half of this machine's {memory / 2**30:.1f} GiB: rescale them "
                f"with image_size / --image-size (e.g. 256), or stream them (in_memory=False)"
            )
        images = torch.empty((len(self), self.channels, *self.size), dtype=torch.uint8)
        keep = torch.ones(len(self), dtype=torch.bool)
        skipped = list(self.skipped)
        start = 0
        for batch, _, errors in _iterate(decoder, list(range(len(self))), num_workers, chunk=64):
            n = len(batch)
            images[start : start + n] = batch
            for offset, message in errors:
                if not self.skip_bad:
                    raise ClassicNetsError(message)
                keep[start + offset] = False
                skipped.append(self.files[start + offset])
            start += n
        notes = [n for n in self.notes if not n.startswith("skipped ")]
        if skipped:
            notes.append(f"skipped {len(skipped)} unreadable image(s)")
        return ArrayDataset(
            images=images[keep] if not bool(keep.all()) else images,
            labels=self.labels[keep],
            classes=self.classes,
            name=self.name,
            split=self.split,
            source=self.source,
            checksum=self.checksum,
            notes=notes,
            skipped=skipped,
        )


class ImageDecoder(torch.utils.data.Dataset):
    """Decodes file i to uint8 C×H×W at the folder's channels and size; picklable for worker processes.

    Returns (image, label, error): a bad file gives a zero image and a one-line message, so the caller
    decides between stopping and skipping (an exception inside a worker would reach the user as a
    multi-line traceback).
    """

    def __init__(self, files, labels, channels, size, resize):
        self.files, self.labels, self.channels, self.size, self.resize = files, labels, channels, size, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            image = decode(path, self.channels)
        except DECODE_ERRORS as e:
            return self._blank(), self.labels[i], bad_image_message(path, e)
        if tuple(image.shape[1:]) != self.size:
            if not self.resize:  # the header said one size, the pixels another
                got, said = f"{image.shape[2]}x{image.shape[1]}", f"{self.size[1]}x{self.size[0]}"
                reason = f"decodes to {got}, its header said {said}"
                return self._blank(), self.labels[i], _bad_image_message(path, reason)
            image = resize_and_crop(image, self.size)
        return image, self.labels[i], ""

    def _blank(self) -> torch.Tensor:
        return torch.zeros((self.channels, *self.size), dtype=torch.uint8)


class ImageTooLarge(ValueError):
    """An image whose header says it is over the decoding cap: `problem` says how, `remedy` what to do."""

    def __init__(self, problem: str, remedy: str):
        super().__init__(problem)
        self.problem, self.remedy = problem, remedy


def check_image_size(width: int, height: int) -> None:
    """Raise ImageTooLarge unless an image of this header size is within MAX_PIXELS and MAX_ASPECT:1."""
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels)")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageTooLarge(f"is {width}x{height} pixels by its header, sides more than {MAX_ASPECT}:1 "
                            f"apart (the limit for decoding)", "crop")


def _too_many_pixels(size: str) -> ImageTooLarge:
    limit = f"{MAX_PIXELS // 1_000_000}-megapixel"
    return ImageTooLarge(f"is {size} by its header, over the {limit} limit for decoding", "downscale")


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """PIL's lazy open (header only), refusing an image over the cap before any pixel is decoded.

    PIL's warnings are silenced inside (a damaged TIFF's "Corrupt EXIF data", the bomb warning our lower
    cap makes moot): the file either decodes or fails with one line, never a screenful of warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:  # past twice PIL's limit: PIL refuses before we can
            found = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "over 178 megapixels"
            raise _too_many_pixels(size) from None
        with im:
            check_image_size(*im.size)
            yield im


def decode(path: str, channels: int) -> torch.Tensor:
    """One image file as uint8 C×H×W with `channels` 1 (luma) or 3 (RGB); alpha dropped, first frame only.
    Raises one of DECODE_ERRORS for a damaged file, ImageTooLarge for one over the cap.

    PIL rather than torchvision.io: torchvision 0.29 deprecates its decoders, and PIL's mode conversions
    (palette, grayscale+alpha, CMYK) are the reference behaviour users know from the tutorials.
    """
    with open_image(path) as im:
        if im.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte instead of clipping
            array = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
            array = np.repeat(array[..., None], 3, axis=2) if channels == 3 else array
        else:
            array = np.array(im.convert("RGB" if channels == 3 else "L"))  # a writable copy
    tensor = torch.from_numpy(array)
    return tensor.permute(2, 0, 1).contiguous() if tensor.ndim == 3 else tensor[None]


def bad_image_message(path: str, error: BaseException) -> str:
    """The one line for an image that cannot be decoded: which, why, and the fixes (--skip-bad among them)."""
    if isinstance(error, ImageTooLarge):
        return (f"image {printable(path)} {error.problem}: {error.remedy} or delete it, "
                f"or skip unreadable images with --skip-bad (skip_bad=True)")
    return _bad_image_message(path, error_reason(error))


def error_reason(error: BaseException) -> str:
    """A short reason for a failed read: the OS's words for an OSError, else the first line of the error."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (str(error).splitlines() or [type(error).__name__])[0][:100]


def _bad_image_message(path: str, reason: str) -> str:
    return (
        f"cannot read image {printable(path)} ({reason}): fix or delete it, "
        f"or skip unreadable images with --skip-bad (skip_bad=True)"
    )


def resize_and_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Rescale so the image covers `size` (antialiased), then take the centre: aspect ratio kept."""
    h, w = image.shape[1:]
    scale = max(size[0] / h, size[1] / w)
    new = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
    out = F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (new[0] - size[0]) // 2, (new[1] - size[1]) // 2
    return out[:, top : top + size[0], left : left + size[1]].contiguous()


def collate_images(items):
    images = torch.stack([it[0] for it in items])
    labels = torch.stack([torch.as_tensor(it[1]) for it in items])
    errors = [(k, it[2]) for k, it in enumerate(items) if it[2]]
    return images, labels, errors


def _iterate(decoder: ImageDecoder, indices: list[int], num_workers: int, chunk: int):
    """(images, labels, errors) for consecutive chunks of `indices`, decoded in worker processes if asked."""
    batches = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]
    loader = torch.utils.data.DataLoader(
        decoder, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_images
    )
    yield from loader


# --------------------------------------------------------------------------------------------- scanning


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries; one that cannot be listed is an error naming it (it would otherwise look empty)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except PermissionError:
        shown = printable(folder)
        raise ClassicNetsError(
            f"cannot list folder {shown} (permission denied): give yourself read access to the image folder, "
            f"e.g. chmod -R u+rX {shlex.quote(shown)}"
        ) from None
    except OSError as e:
        raise ClassicNetsError(
            f"cannot list folder {printable(folder)} ({error_reason(e)}): check that it is a readable folder"
        ) from None


def _is(entry: os.DirEntry, kind: str) -> bool:
    try:  # like Path.is_dir / is_file: a broken link or an entry that cannot be stat'ed is neither
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        return False


def _class_dirs(root: Path) -> list[Path]:
    return sorted(Path(e.path) for e in _entries(root) if _is(e, "dir") and not e.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """The image files under `folder` at any depth (not following links to folders), sorted."""
    found, pending = [], [folder]
    while pending:
        for entry in _entries(pending.pop()):
            if _is(entry, "dir"):
                if not entry.is_symlink():
                    pending.append(Path(entry.path))
            elif (os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")
                  and _is(entry, "file")):
                found.append(Path(entry.path))
    return sorted(found)


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / d for d in SPLIT_DIRS.get(split, ()) if (root / d).is_dir()), None)


def scan_folder(
    path: str | os.PathLike,
    split: str,
    *,
    image_size: int | tuple[int, int] | None = None,
    skip_bad: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> FolderDataset:
    """List a folder's images for `split`, read their headers, and decide channels and size."""
    root = Path(path).expanduser()
    try:
        root.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ClassicNetsError(
            f"image folder {printable(root)} does not exist: pass folder:PATH with one subfolder per class"
        ) from None
    except OSError as e:
        raise ClassicNetsError(
            f"cannot open image folder {printable(root)} ({error_reason(e)}): give yourself access to it "
            f"and the folders above it (chmod u+rx), or pass another folder"
        ) from None
    if not root.is_dir():
        raise ClassicNetsError(
            f"image folder {printable(root)} is a file, not a folder: pass folder:PATH with one subfolder "
            f"per class"
        )
    if split not in SPLIT_DIRS:
        raise ClassicNetsError(f"an image folder has splits train, val, test and all; got {split!r}")
    train_dir = _split_dir(root, "train")
    holdout = False
    if split == "all" and train_dir is not None:
        raise ClassicNetsError(f"{printable(root)} has a train/ folder: test split val or test (all is for a "
                               "folder of class folders, such as an ImageNet val folder)")
    if split == "all":
        base = root
    elif train_dir is None:  # class folders directly under root: hold out a seeded fraction as val
        if split == "test":
            raise ClassicNetsError(f"{root} has no test/ folder: use split 'val' (held out from the images)")
        base, holdout = root, True
    else:
        base = _split_dir(root, split)
        if base is None:
            if split == "test":
                raise ClassicNetsError(f"{root} has train/ but no test/ folder: add one, or use split 'val'")
            base, holdout = train_dir, True
    dirs = [d.name for d in _class_dirs(train_dir or root)]  # as on disk, to find the files
    classes = [printable(name) for name in dirs]  # as shown: data info, predict, the checkpoint
    top = printable(train_dir or root)
    if not classes:
        raise ClassicNetsError(f"{top} has no class subfolders: put each class's images in PATH/<class>/")
    if len(classes) < 2:
        raise ClassicNetsError(f"{top} has one class subfolder ({classes[0]}): a classifier needs at least two; "
                               "put each class's images in PATH/<class>/")
    if len(set(classes)) < len(classes):
        twice = next(c for c in classes if classes.count(c) > 1)
        raise ClassicNetsError(
            f"{top} has two class folders shown as {twice} (one name is not UTF-8): rename one"
        )
    files, labels = [], []
    for c, name in enumerate(dirs):
        folder = base / name
        found = _image_files(folder) if folder.is_dir() else []
        if not found and (base == (train_dir or root)):
            suffixes = "/".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            raise ClassicNetsError(
                f"class folder {printable(folder)} holds no images ({suffixes}): add images or remove it"
            )
        files += [str(p) for p in found]
        labels += [c] * len(found)
    if base != (train_dir or root):
        extra = sorted({d.name for d in _class_dirs(base)} - set(dirs))
        if extra:
            raise ClassicNetsError(
                f"{printable(base / extra[0])} is a class that {top} lacks: every class needs training images"
            )
    labels = torch.tensor(labels, dtype=torch.int64)
    if holdout:
        keep, held = stratified_holdout(labels, val_fraction, seed)
        chosen = keep if split == "train" else held
        files = [files[i] for i in chosen.tolist()]
        labels = labels[chosen]
    if not files:
        raise ClassicNetsError(f"{printable(base)} holds no images for split {split!r}: too few images to hold "
                               f"out {val_fraction:.0%} of each class; add images, or make a val/ folder beside "
                               "train/")
    return _decide_format(
        files, labels, classes, root, split, image_size, skip_bad, holdout, val_fraction, seed
    )


def _decide_format(files, labels, classes, root, split, image_size, skip_bad, holdout, val_fraction, seed):
    sizes, color, gray, skipped, good = [], 0, 0, [], []
    for i, path in enumerate(files):
        try:
            with open_image(path) as im:
                w, h = im.size
                mode = im.mode
        except DECODE_ERRORS as e:
            if not skip_bad:
                raise ClassicNetsError(bad_image_message(path, e)) from None
            skipped.append(path)
            continue
        good.append(i)
        sizes.append((h, w))
        if mode in _GRAY_MODES:
            gray += 1
        else:
            color += 1
    if not good:
        raise ClassicNetsError(f"no readable images in {printable(root)} for split {split!r}")
    files = [files[i] for i in good]
    labels = labels[torch.tensor(good, dtype=torch.int64)]
    notes = []
    if holdout:
        notes.append(f"split {split!r}: per-class seeded hold-out ({val_fraction:.0%} as val, seed {seed})")
    channels = 3 if color else 1
    if color and gray:
        notes.append(f"converted {gray} grayscale image(s) to RGB (the folder also holds colour images)")
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        resize = any(s != size for s in sizes)
    elif len(set(sizes)) == 1:
        size, resize = sizes[0], False
    else:
        shorts = sorted(min(s) for s in sizes)
        side = min(MAX_DEFAULT_SIZE, shorts[len(shorts) // 2])
        size, resize = (side, side), True
    if resize:
        notes.append(
            f"images differ in size: each rescaled (short side) and centre-cropped to {size[0]}x{size[1]}"
            + ("" if image_size is not None else "; pass image_size / --image-size to choose")
        )
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable image(s)")
    return FolderDataset(
        files=files,
        labels=labels,
        classes=classes,
        name=f"folder:{root}",
        split=split,
        source=str(root),
        channels=channels,
        size=tuple(size),
        resize=resize,
        skip_bad=skip_bad,
        notes=notes,
        skipped=skipped,
    )
