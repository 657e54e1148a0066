"""Where each data set comes from, how it is verified, and reading it into an `ArrayDataset`.

Resolution order (the first place holding any of a data set's files wins; a bad file there is an error,
never silently replaced by another source):
  1. the user's data dir: `root` / --data-dir, else $CLASSICNETS_DATA, else ~/.cache/classicnets;
     looked up as <dir>/<name>, <dir>/<name>/<torchvision folder>, <dir>/<torchvision folder>, <dir>;
  2. known system dirs (Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist);
  3. a download from the official mirrors into <user dir>/<name>, archives checked by MD5.

What "checksum ok" means, per data set:
  fashion-mnist, mnist: the SHA-256 of each *decompressed* IDX file equals the constant below, or the
    .gz equals the official archive's MD5. Content hashes are what matter: Debian recompresses the
    archives (different MD5s, identical IDX bytes). The Fashion-MNIST SHA-256s were computed here from
    Debian's package; the MNIST ones agree in two independent public sources and were not computed here,
    which is why the official archive MD5 (torchvision's) is accepted as well.
  cifar10, cifar100: the MD5 of each extracted python batch equals the official value (torchvision's).
Reading a decoded split is ~0.5 s; the decoded tensors are cached under <user dir>/<name>/.cache keyed by
the source files' path, size and mtime, so later loads take ~0.03 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import utils as tv_utils

from classicnets.data import formats
from classicnets.data.dataset import ArrayDataset
from classicnets.errors import ClassicNetsError

CACHE_FORMAT = "classicnets.data.cache/1"
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class DataFile:
    """One published file: `name` as published (IDX without .gz), and the references it is checked against."""

    name: str
    sha256: str | None = None  # of the decompressed content
    md5: str | None = None  # of the file as published (the .gz for IDX, the extracted batch for CIFAR)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    format: str  # "idx" | "cifar"
    classes: tuple[str, ...]
    splits: dict[str, tuple[DataFile, ...]]  # idx: (images, labels); cifar: the batch files
    subdirs: tuple[str, ...] = ()  # where torchvision keeps the files inside a data dir
    system_dirs: tuple[str, ...] = ()
    debian_package: str | None = None
    mirrors: tuple[str, ...] = ()  # idx: base URLs serving <name>.gz
    archive: tuple[str, str] | None = None  # cifar: (url, md5) of the tarball
    meta: DataFile | None = None  # cifar: the file naming the classes
    label_key: str = "labels"
    names_key: str = "label_names"
    verified_by: str = ""

    def files(self) -> list[DataFile]:
        out = [f for split in self.splits.values() for f in split]
        return out + ([self.meta] if self.meta else [])


def _idx_pair(prefix: str, images: tuple[str, str], labels: tuple[str, str]) -> tuple[DataFile, DataFile]:
    return (
        DataFile(f"{prefix}-images-idx3-ubyte", sha256=images[0], md5=images[1]),
        DataFile(f"{prefix}-labels-idx1-ubyte", sha256=labels[0], md5=labels[1]),
    )


_CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]

# The catalogue. Hash constants: see the module docstring for where each comes from.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="fashion-mnist",
            title="Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017)",
            format="idx",
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            splits={
                "train": _idx_pair(
                    "train",
                    ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                     "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                    ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                     "25c81989df183df01b3e8a0aad5dffbe"),
                ),
                "test": _idx_pair(
                    "t10k",
                    ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                     "bef4ecab320f06d8554ea6380940ec79"),
                    ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                     "bb300cfdad3c16e7a12a480ee83cd310"),
                ),
            },
            subdirs=("FashionMNIST/raw",),
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            debian_package="dataset-fashion-mnist",
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            verified_by="sha256 of the decompressed IDX files",
        ),
        DatasetSpec(
            name="mnist",
            title="MNIST (LeCun, Cortes and Burges, 1998)",
            format="idx",
            classes=tuple(str(d) for d in range(10)),
            splits={
                "train": _idx_pair(
                    "train",
                    ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                     "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                    ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                     "d53e105ee54ea40749a09fcbcd1e9432"),
                ),
                "test": _idx_pair(
                    "t10k",
                    ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                     "9fb629c4189551a2d022fa330f9573f3"),
                    ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                     "ec29112dd5afa0611ce80d1b7f02629c"),
                ),
            },
            subdirs=("MNIST/raw",),
            system_dirs=("/usr/share/datasets/mnist",),
            mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            verified_by="sha256 of the decompressed IDX files, or md5 of the official .gz",
        ),
        DatasetSpec(
            name="cifar10",
            title="CIFAR-10 (Krizhevsky, 2009)",
            format="cifar",
            classes=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
            splits={
                "train": tuple(
                    DataFile(f"data_batch_{i}", md5=md5)
                    for i, md5 in enumerate(
                        ["c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec",
                         "54ebc095f3ab1f0389bbae665268c751", "634d18415352ddfa80567beed471001a",
                         "482c414d41f54cd18b22e5b47cb7c3cb"],
                        start=1,
                    )
                ),
                "test": (DataFile("test_batch", md5="40351d587109b95175f43aff81a1287e"),),
            },
            subdirs=("cifar-10-batches-py",),
            system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
            archive=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a"),
            meta=DataFile("batches.meta", md5="5ff9c542aee3614f3951f8cda6e48888"),
            verified_by="md5 of the extracted python batches",
        ),
        DatasetSpec(
            name="cifar100",
            title="CIFAR-100 (Krizhevsky, 2009), fine labels",
            format="cifar",
            classes=tuple(_CIFAR100_CLASSES),
            splits={
                "train": (DataFile("train", md5="16019d7e3df5f24257cddd939b257f8d"),),
                "test": (DataFile("test", md5="f0ef6b0ae62326f3e7ffdfab6717acfc"),),
            },
            subdirs=("cifar-100-python",),
            system_dirs=("/usr/share/datasets/cifar100", "/usr/share/datasets/cifar-100"),
            archive=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     "eb9058c3a382ffc7106e4002c42a8d85"),
            meta=DataFile("meta", md5="7973b15100ade9c7d40fb424638fde48"),
            label_key="fine_labels",
            names_key="fine_label_names",
            verified_by="md5 of the extracted python batches",
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    spec = DATASETS.get(name.lower())
    if spec is None:
        known = ", ".join(DATASETS)
        raise ClassicNetsError(
            f"unknown data set {name!r}: choose one of {known}, or folder:PATH for an image folder"
        )
    return spec


def user_root(root: str | os.PathLike | None = None) -> Path:
    """The user's data dir: `root`, else $CLASSICNETS_DATA, else ~/.cache/classicnets."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("CLASSICNETS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "classicnets"


@dataclass(frozen=True)
class Location:
    """A directory holding (some of) a data set's files, and what kind of place it is."""

    path: Path
    kind: str  # "user" | "system"

    def fix(self, spec: DatasetSpec, file: Path | None = None) -> str:
        """How to repair a bad file here: depends on who put it there."""
        if self.kind == "system" and spec.debian_package:
            return f"reinstall it: apt-get install --reinstall {spec.debian_package}"
        target = file or self.path
        return f"delete {target} and run 'classicnets data get {spec.name}', or put the official file there"


def _published_paths(spec: DatasetSpec, directory: Path, file: DataFile) -> list[Path]:
    # IDX files are published gzipped; a gunzipped copy is just as good.
    if spec.format == "idx":
        return [directory / (file.name + ".gz"), directory / file.name]
    return [directory / file.name]


def find_file(spec: DatasetSpec, directory: Path, file: DataFile) -> Path | None:
    return next((p for p in _published_paths(spec, directory, file) if p.is_file()), None)


def candidate_dirs(spec: DatasetSpec, root: str | os.PathLike | None = None) -> list[Location]:
    base = user_root(root)
    user = []
    for top in (base / spec.name, base):
        user += [top] + [top / sub for sub in spec.subdirs]
    return [Location(p, "user") for p in user] + [Location(Path(p), "system") for p in spec.system_dirs]


def locate(spec: DatasetSpec, root: str | os.PathLike | None = None) -> Location | None:
    """The first candidate dir holding any of the data set's files, or None."""
    for loc in candidate_dirs(spec, root):
        if loc.path.is_dir() and any(find_file(spec, loc.path, f) for f in spec.files()):
            return loc
    return None


def missing_error(spec: DatasetSpec, root, reason: str | None = None) -> ClassicNetsError:
    """The one error for 'not here and not downloadable', listing the three ways to get the data."""
    target = user_root(root) / spec.name
    if spec.format == "idx":
        files = ", ".join(f.name + ".gz" for split in spec.splits.values() for f in split)
    else:
        files = f"the folder {spec.subdirs[0]} from {spec.archive[0].rsplit('/', 1)[1]}"
    ways = [f"put {files} in {target} (or pass --data-dir)"]
    if spec.debian_package:
        ways.append(f"apt-get install {spec.debian_package}")
    ways.append(f"connect to the internet and run 'classicnets data get {spec.name}'")
    system = "".join(f", {d}" for d in spec.system_dirs)
    why = f" and {reason}" if reason else ""
    return ClassicNetsError(f"{spec.name} not found in {user_root(root)}{system}{why}: " + "; or ".join(ways))


# --------------------------------------------------------------------------------------------- download


def fetch(name: str, root: str | os.PathLike | None = None) -> Location:
    """Make the data set available: where it already is, else download it into <user dir>/<name>."""
    spec = get_spec(name)
    found = locate(spec, root)
    if found is not None and all(find_file(spec, found.path, f) for f in spec.files()):
        return found
    target = user_root(root) / spec.name
    try:
        if spec.format == "idx":
            _download_idx(spec, target)
        else:
            _download_archive(spec, target)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; torchvision: RuntimeError
        try:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # leave no empty folder behind
        except OSError:  # a folder we may not list or change: leave it as it is
            pass
        raise missing_error(spec, root, f"the download failed ({_reason(e)})") from None
    return locate(spec, root) or Location(target, "user")


def _reason(e: BaseException) -> str:
    """A short, one-line reason for a failed download."""
    text = str(getattr(e, "reason", None) or e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:100]


def _download_idx(spec: DatasetSpec, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S), tempfile.TemporaryDirectory(dir=target, prefix=".get-") as tmp:
        for file in spec.files():
            if find_file(spec, target, file):
                continue
            errors = []
            for mirror in spec.mirrors:
                try:  # torchvision checks the MD5 and raises if it differs
                    tv_utils.download_url(mirror + file.name + ".gz", tmp, filename=file.name + ".gz", md5=file.md5)
                    break
                except (OSError, RuntimeError) as e:
                    errors.append(_reason(e))
            else:
                tried = f" ({len(spec.mirrors)} mirrors tried)" if len(spec.mirrors) > 1 else ""
                raise OSError(f"{file.name}.gz: {errors[0]}{tried}")
            # Only a complete, checked file lands in the data dir: an interrupted download leaves nothing.
            os.replace(Path(tmp) / (file.name + ".gz"), target / (file.name + ".gz"))


def _download_archive(spec: DatasetSpec, target: Path) -> None:
    url, md5 = spec.archive
    target.mkdir(parents=True, exist_ok=True)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S), tempfile.TemporaryDirectory(dir=target, prefix=".get-") as tmp:
        tv_utils.download_and_extract_archive(url, download_root=tmp, extract_root=tmp, md5=md5)
        final = target / spec.subdirs[0]
        if final.exists():
            shutil.rmtree(final)
        os.replace(Path(tmp) / spec.subdirs[0], final)


class _socket_timeout:
    """torchvision's urlopen has no timeout; offline, a stalled connection must fail, not hang."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)

    def __exit__(self, *exc):
        socket.setdefaulttimeout(self.previous)


# --------------------------------------------------------------------------------------------- reading


def load_named(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    cache: bool = True,
) -> ArrayDataset:
    spec = get_spec(name)
    if split not in spec.splits:
        raise ClassicNetsError(f"{spec.name} has splits {' and '.join(spec.splits)}; got {split!r}")
    location = locate(spec, root)
    if location is None:
        if not download:
            raise missing_error(spec, root)
        location = fetch(spec.name, root)
    paths = _split_paths(spec, split, location)
    cache_file = _cache_path(spec, split, paths, verify, root) if cache else None
    cached = _read_cache(cache_file, spec, split)
    if cached is not None:
        return cached
    images, labels, classes, checksum = _read_split(spec, split, location, paths, verify)
    dataset = ArrayDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=classes,
        name=spec.name,
        split=split,
        source=str(location.path),
        checksum=checksum,
    )
    _write_cache(cache_file, dataset)
    return dataset


def _split_paths(spec: DatasetSpec, split: str, location: Location) -> list[Path]:
    wanted = list(spec.splits[split]) + ([spec.meta] if spec.meta else [])
    paths = []
    for file in wanted:
        path = find_file(spec, location.path, file)
        if path is None:
            shown = file.name + (".gz" if spec.format == "idx" else "")
            raise ClassicNetsError(
                f"{location.path} holds {spec.name} files but not {shown}: add it, or "
                f"run 'classicnets data get {spec.name}'"
                + (f" (or reinstall {spec.debian_package})" if location.kind == "system" else "")
            )
        paths.append(path)
    return paths


def _verify(spec: DatasetSpec, file: DataFile, path: Path, content: bytes, location: Location) -> bool:
    """True when checked against a reference; raises on a mismatch; False when no reference applies."""
    if file.sha256 is not None and hashlib.sha256(content).hexdigest() == file.sha256:
        return True
    is_published_form = path.suffix == ".gz" or spec.format != "idx"
    if file.md5 is not None and is_published_form:
        published = path.read_bytes() if spec.format == "idx" else content
        if hashlib.md5(published).hexdigest() == file.md5:
            return True
    if file.sha256 is None and not (file.md5 is not None and is_published_form):
        return False
    raise ClassicNetsError(
        f"{path} fails its checksum ({spec.verified_by}): it is corrupt or not {spec.title}; "
        f"{location.fix(spec, path)}"
    )


def _read_split(spec: DatasetSpec, split: str, location: Location, paths: list[Path], verify: bool):
    files = list(spec.splits[split]) + ([spec.meta] if spec.meta else [])
    fixes = [location.fix(spec, path) for path in paths]
    # Structure first (its errors say more than "checksum mismatch"), then the checksums.
    if spec.format == "idx":
        (img_path, lbl_path), (img_fix, lbl_fix) = paths, fixes
        img_content, images = formats.read_idx(img_path, formats.IDX_IMAGES_MAGIC, img_fix)
        lbl_content, labels = formats.read_idx(lbl_path, formats.IDX_LABELS_MAGIC, lbl_fix)
        labels = labels.astype(np.int64)
        contents = list(zip(files, paths, [img_content, lbl_content], fixes))
        if len(images) != len(labels):
            raise ClassicNetsError(
                f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels; {lbl_fix}"
            )
        formats.check_labels(labels, len(spec.classes), lbl_path, lbl_fix)
        images = images[:, None]  # N×1×H×W
        classes = list(spec.classes)
    else:
        limit = formats.MAX_PICKLE_BYTES
        read = [formats.read_file_bytes(path, fix, limit) for path, fix in zip(paths, fixes)]
        contents = list(zip(files, paths, read, fixes))
        *batches, (_, meta_path, meta_bytes, meta_fix) = contents
        classes = formats.parse_cifar_meta(meta_bytes, meta_path, spec.names_key, meta_fix)
        if len(classes) != len(spec.classes):
            raise ClassicNetsError(
                f"{meta_path} names {len(classes)} classes, {spec.name} has {len(spec.classes)}; {meta_fix}"
            )
        parts = [formats.parse_cifar_batch(b, p, spec.label_key, fix) for _, p, b, fix in batches]
        for (_, p, _, fix), (_, lab) in zip(batches, parts):
            formats.check_labels(lab, len(classes), p, fix)
        images = np.concatenate([im for im, _ in parts])
        labels = np.concatenate([lab for _, lab in parts])
    if verify:
        checked = [_verify(spec, file, path, content, location) for file, path, content, _ in contents]
        checksum = "ok" if all(checked) else "not verified (no reference hash for these files)"
    else:
        checksum = "not verified (verify=False)"
    # A CIFAR array rebuilt from a pickle's bytes is read-only; torch wants memory it may write.
    images = images.copy() if not (images.flags.writeable and images.flags.c_contiguous) else images
    return images, np.ascontiguousarray(labels), classes, checksum


# --------------------------------------------------------------------------------------------- cache


def _cache_path(spec, split, paths, verify, root) -> Path:
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    key = hashlib.blake2b(json.dumps([CACHE_FORMAT, spec.name, split, verify, stamp]).encode(), digest_size=8)
    return user_root(root) / spec.name / ".cache" / f"{split}-{key.hexdigest()}.pt"


def _read_cache(path: Path | None, spec: DatasetSpec, split: str) -> ArrayDataset | None:
    """The cached split, or None (then it is parsed again) when the cache is missing, damaged or edited:
    it is held to what the source files would give (classes, shapes, dtypes, labels in range)."""
    if path is None or not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != CACHE_FORMAT:
            return None
        dataset = ArrayDataset(**{k: v for k, v in blob.items() if k != "format"})
    except Exception:  # noqa: BLE001 - any damage to the cache means: rebuild it from the source files
        return None
    return dataset if _cache_agrees(dataset, spec, split) else None


def _cache_agrees(dataset: ArrayDataset, spec: DatasetSpec, split: str) -> bool:
    images, labels = dataset.images, dataset.labels
    if dataset.name != spec.name or dataset.split != split:
        return False
    if spec.classes and list(dataset.classes) != list(spec.classes):
        return False
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4):
        return False
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.dim() == 1
            and len(labels) == len(images)):
        return False
    return not labels.numel() or (int(labels.min()) >= 0 and int(labels.max()) < len(dataset.classes))


def _write_cache(path: Path | None, dataset: ArrayDataset) -> None:
    if path is None:
        return
    blob = {
        "format": CACHE_FORMAT,
        "images": dataset.images,
        "labels": dataset.labels,
        "classes": dataset.classes,
        "name": dataset.name,
        "split": dataset.split,
        "source": dataset.source,
        "checksum": dataset.checksum,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"{dataset.split}-*.pt"):  # stale entries of an earlier source
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:  # a read-only home is fine: we just parse again next time
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
