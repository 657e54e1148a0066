"""Data: real data sets as uint8 tensors, batched device-side transforms, resumable loaders.

    >>> from classicnets import data
    >>> train = data.load("fashion-mnist", "train")          # ArrayDataset: uint8 60000×1×28×28
    >>> mean, std = train.stats()
    >>> tf = data.transforms.train_transform(224, flip=True, mean=mean, std=std)
    >>> loader = data.TensorLoader(train, 128, seed=0, transform=tf)
    >>> for x, y in loader: ...                                # x float32 128×1×224×224

Where files come from and how they are verified: `classicnets.data.sources`. Image folders:
`classicnets.data.folder`. Batch order, sharding and resume: `classicnets.data.loader`.
"""

from __future__ import annotations

import os

from classicnets.data import transforms
from classicnets.data.dataset import ArrayDataset, stratified_holdout
from classicnets.data.folder import FolderDataset, scan_folder
from classicnets.data.loader import EpochOrder, StreamingLoader, TensorLoader, make_loader
from classicnets.data.sources import DATASETS, fetch, get_spec, load_named, locate, user_root

FOLDER_PREFIX = "folder:"


def load(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    cache: bool = True,
    image_size: int | tuple[int, int] | None = None,
    skip_bad: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    in_memory: bool = True,
) -> ArrayDataset | FolderDataset:
    """Load split "train" or "test" of a named data set (fashion-mnist, mnist, cifar10, cifar100), or
    split "train" / "val" (/ "test") of folder:PATH, as an `ArrayDataset` of uint8 images.

    Named data sets: root is the user's data dir (see `sources`); download=False never touches the
    network; verify=False skips the checksums (structure is always checked); cache keeps the decoded
    tensors for the next load. Folders: image_size, skip_bad, val_fraction and seed as in
    `folder.scan_folder`; in_memory=False returns a `FolderDataset` to stream with `StreamingLoader`.
    """
    if is_folder(name):
        folder = scan_folder(
            name[len(FOLDER_PREFIX):], split, image_size=image_size, skip_bad=skip_bad,
            val_fraction=val_fraction, seed=seed,
        )
        return folder.to_memory() if in_memory else folder
    return load_named(name, split, root, download=download, verify=verify, cache=cache)


def is_folder(name: str) -> bool:
    """Does this data name point at an image folder ("folder:PATH") rather than a named data set?"""
    return name.startswith(FOLDER_PREFIX)


def test_split(name: str) -> str:
    """The split a run is tested on: an image folder's held-out "val", a named data set's "test"."""
    return "val" if is_folder(name) else "test"


def list_datasets() -> list[str]:
    return list(DATASETS)


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "EpochOrder",
    "FolderDataset",
    "StreamingLoader",
    "TensorLoader",
    "fetch",
    "get_spec",
    "is_folder",
    "list_datasets",
    "load",
    "locate",
    "make_loader",
    "scan_folder",
    "stratified_holdout",
    "test_split",
    "transforms",
    "user_root",
]
