"""Named data sets: the real file formats written small in tmp dirs, read through the real code; every
bad-input case; where files are looked for; the CLI; and the real Fashion-MNIST when it is installed."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from classicnets import data
from classicnets.cli import main
from classicnets.data import sources
from helpers import error_of

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.realdata


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own empty user data dir, so nothing reads or writes ~/.cache."""
    monkeypatch.setenv("CLASSICNETS_DATA", str(tmp_path / "user"))
    return tmp_path / "user"


# --------------------------------------------------------------------------------------- writers


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, n_train=12, n_test=6, gz=True, seed=0, side=28) -> dict:
    """Four IDX files as published (gzipped) or gunzipped; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            payload = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar10(folder: Path, per_batch=4, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()  # CIFAR-10 keeps labels as a list
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": images,
                 b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (images, labels)
    names = [c.encode() for c in sources.DATASETS["cifar10"].classes]
    meta = {b"label_names": names, b"num_cases_per_batch": 4}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def write_cifar100(folder: Path, n=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ("train", "test"):
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        coarse = rng.integers(0, 20, n).tolist()
        batch = {"data": images, "fine_labels": fine, "coarse_labels": coarse, "filenames": ["a"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (images, fine)
    meta = {"fine_label_names": list(sources.DATASETS["cifar100"].classes), "coarse_label_names": ["c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


# --------------------------------------------------------------------------------------- IDX


def test_idx_gz_files_load_as_uint8_nchw_with_labels_and_class_names(isolated_data_dir):
    arrays = write_idx_set(isolated_data_dir / "fashion-mnist")
    ds = data.load("fashion-mnist", "train", verify=False)
    images, labels = arrays["train"]
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape) == (12, 1, 28, 28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    assert ds.source == str(isolated_data_dir / "fashion-mnist")
    assert ds.checksum.startswith("not verified")
    test = data.load("fashion-mnist", "test", verify=False)
    assert len(test) == 6 and test.split == "test"


def test_gunzipped_idx_files_and_torchvision_layout_are_found(tmp_path):
    arrays = write_idx_set(tmp_path / "mine" / "FashionMNIST" / "raw", gz=False)
    ds = data.load("fashion-mnist", "test", root=tmp_path / "mine", verify=False)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["t10k"][0]))


def test_checksum_mismatch_is_an_error_naming_the_file_and_the_fix(isolated_data_dir):
    write_idx_set(isolated_data_dir / "fashion-mnist")
    message = error_of(lambda: data.load("fashion-mnist", "train"))
    assert "train-images-idx3-ubyte.gz fails its checksum" in message
    assert "classicnets data get fashion-mnist" in message


def test_a_corrupt_user_file_is_never_replaced_by_the_system_copy(isolated_data_dir, tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx_set(system, seed=1)
    spec = dataclasses.replace(sources.DATASETS["mnist"], system_dirs=(str(system),))
    monkeypatch.setitem(sources.DATASETS, "mnist", spec)
    assert data.load("mnist", "train", verify=False).source == str(system)
    user = isolated_data_dir / "mnist"
    write_idx_set(user)
    (user / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    message = error_of(lambda: data.load("mnist", "train", verify=False))
    assert str(user / "train-images-idx3-ubyte.gz") in message and "not a valid gzip" in message


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate_gz", "truncated gzip archive"),
        ("garbage_gz", "not a valid gzip archive"),
        ("wrong_magic", "magic number 0x00000801, expected 0x00000803"),
        ("short_body", "is truncated: its header promises 12x28x28"),
        ("count_mismatch", "holds 12 images but"),
        ("label_out_of_range", "label 10 at index 3 is outside 0..9"),
    ],
)
def test_bad_idx_input_ends_in_one_clear_error(isolated_data_dir, damage, expected):
    folder = isolated_data_dir / "fashion-mnist"
    arrays = write_idx_set(folder)
    images, labels = arrays["train"]
    img_path, lbl_path = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if damage == "truncate_gz":
        img_path.write_bytes(img_path.read_bytes()[:-40])
    elif damage == "garbage_gz":
        img_path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    elif damage == "wrong_magic":
        img_path.write_bytes(gzip.compress(idx_bytes(images, magic=0x0801)))
    elif damage == "short_body":
        img_path.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
    elif damage == "count_mismatch":
        lbl_path.write_bytes(gzip.compress(idx_bytes(labels[:-2])))
    elif damage == "label_out_of_range":
        bad = labels.copy()
        bad[3] = 10
        lbl_path.write_bytes(gzip.compress(idx_bytes(bad)))
    message = error_of(lambda: data.load("fashion-mnist", "train", verify=False))
    assert expected in message
    assert "fashion-mnist" in message  # the fix names the command to run


def test_bad_input_through_the_cli_exits_2_with_one_line(isolated_data_dir, capsys):
    folder = isolated_data_dir / "fashion-mnist"
    write_idx_set(folder)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:10])
    assert main(["data", "info", "fashion-mnist", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classicnets: error: ") and err.count("\n") == 1 and str(path) in err


def test_a_missing_file_of_the_split_is_named(isolated_data_dir):
    folder = isolated_data_dir / "fashion-mnist"
    write_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert len(data.load("fashion-mnist", "train", verify=False)) == 12
    message = error_of(lambda: data.load("fashion-mnist", "test", verify=False))
    assert "not t10k-labels-idx1-ubyte.gz" in message


def test_unknown_names_and_splits_list_the_choices():
    assert "fashion-mnist, mnist, cifar10, cifar100" in error_of(lambda: data.load("imagenet", "train"))
    assert "train and test" in error_of(lambda: data.load("mnist", "val"))


# --------------------------------------------------------------------------------------- missing / download


def test_missing_offline_gives_one_error_with_the_three_ways(isolated_data_dir, monkeypatch):
    monkeypatch.setitem(
        sources.DATASETS, "fashion-mnist",
        dataclasses.replace(sources.DATASETS["fashion-mnist"], system_dirs=("/nonexistent/fashion-mnist",)),
    )
    message = error_of(lambda: data.load("fashion-mnist", "train", download=False))
    assert "put train-images-idx3-ubyte.gz" in message and str(isolated_data_dir / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "classicnets data get fashion-mnist" in message


def test_failed_download_reports_why_and_leaves_nothing_behind(isolated_data_dir, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    message = error_of(lambda: data.load("mnist", "train"))
    reason = "download failed (train-images-idx3-ubyte.gz: Name or service not known (2 mirrors tried))"
    assert reason in message
    assert "put train-images-idx3-ubyte.gz" in message
    assert not (isolated_data_dir / "mnist").exists()


def test_download_moves_only_complete_files_into_the_data_dir(isolated_data_dir, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    published = tmp_path / "mirror"
    write_idx_set(published)
    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, md5))
        (Path(root) / filename).write_bytes((published / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download)
    assert main(["data", "get", "mnist"]) == 2  # our fake files fail MNIST's checksums: reported, exit 2
    target = isolated_data_dir / "mnist"
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in published.iterdir())
    assert calls[0] == ("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
                        "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert len(data.load("mnist", "train", verify=False)) == 12


# --------------------------------------------------------------------------------------- CIFAR


def test_cifar10_python_batches_load_in_channel_planes(isolated_data_dir):
    written = write_cifar10(isolated_data_dir / "cifar10" / "cifar-10-batches-py")
    train = data.load("cifar10", "train", verify=False)
    assert tuple(train.images.shape) == (20, 3, 32, 32) and train.classes[1] == "automobile"
    first_images, first_labels = written["data_batch_1"]
    # A row holds the R plane, then G, then B, each 32x32 row-major.
    assert train.images[0, 1, 2, 3].item() == first_images[0, 1024 + 2 * 32 + 3]
    assert train.labels[:4].tolist() == first_labels
    assert train.labels[16:].tolist() == written["data_batch_5"][1]
    test = data.load("cifar10", "test", verify=False)
    assert len(test) == 4 and test.labels.tolist() == written["test_batch"][1]


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path):
    written = write_cifar100(tmp_path / "cifar-100-python")
    train = data.load("cifar100", "train", root=tmp_path, verify=False)
    assert len(train.classes) == 100 and train.classes[4] == "beaver"
    assert train.labels.tolist() == written["train"][1]


def test_cifar_checksums_are_checked(isolated_data_dir):
    write_cifar10(isolated_data_dir / "cifar10")
    message = error_of(lambda: data.load("cifar10", "test"))
    assert "test_batch fails its checksum (md5 of the extracted python batches)" in message


def test_a_pickle_that_asks_for_code_is_refused(isolated_data_dir):
    folder = isolated_data_dir / "cifar10"
    write_cifar10(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    message = error_of(lambda: data.load("cifar10", "test", verify=False))
    assert "not a CIFAR python batch" in message and "print, which a CIFAR batch never holds" in message


def test_cifar_batch_with_wrong_shape_or_labels_is_an_error(isolated_data_dir):
    folder = isolated_data_dir / "cifar10"
    write_cifar10(folder)
    bad = {"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    def load_test():
        return data.load("cifar10", "test", verify=False)

    assert "'data' must be a uint8 array N×3072" in error_of(load_test)
    bad = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 11]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    assert "label 11 at index 3 is outside 0..9" in error_of(load_test)


# --------------------------------------------------------------------------------------- cache, stats


def test_decoded_tensors_are_cached_and_the_cache_follows_the_source(isolated_data_dir):
    folder = isolated_data_dir / "fashion-mnist"
    write_idx_set(folder, seed=0)
    first = data.load("fashion-mnist", "train", verify=False)
    cached = list((folder / ".cache").glob("train-*.pt"))
    assert len(cached) == 1
    again = data.load("fashion-mnist", "train", verify=False)
    assert torch.equal(again.images, first.images) and again.source == first.source
    arrays = write_idx_set(folder, seed=5)  # new content: a new size/mtime, so the cache is not used
    changed = data.load("fashion-mnist", "train", verify=False)
    assert torch.equal(changed.images[:, 0], torch.from_numpy(arrays["train"][0]))
    cached[0].write_bytes(b"damaged")  # a damaged cache entry is ignored, not trusted
    assert torch.equal(data.load("fashion-mnist", "train", verify=False).images, changed.images)


@pytest.mark.parametrize("edit", ["labels out of range", "negative labels", "a million classes",
                                  "float images", "fewer labels"])
def test_an_edited_cache_is_not_trusted_but_rebuilt_from_the_source(isolated_data_dir, edit):
    folder = isolated_data_dir / "fashion-mnist"
    write_idx_set(folder, seed=0)
    good = data.load("fashion-mnist", "train", verify=False)
    (cache,) = (folder / ".cache").glob("train-*.pt")
    blob = torch.load(cache, weights_only=True)
    if edit == "labels out of range":
        blob["labels"] = blob["labels"] + 200
    elif edit == "negative labels":
        blob["labels"] = blob["labels"] - 100
    elif edit == "a million classes":
        blob["classes"] = [f"c{i}" for i in range(1_000_000)]
    elif edit == "float images":
        blob["images"] = blob["images"].float()
    else:
        blob["labels"] = blob["labels"][:-1]
    torch.save(blob, cache)
    again = data.load("fashion-mnist", "train", verify=False)
    assert torch.equal(again.images, good.images) and torch.equal(again.labels, good.labels)
    assert again.classes == good.classes


def test_stats_are_per_channel_in_unit_range_and_exact():
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[:, 0] = 255
    images[0, 2] = 255
    ds = data.ArrayDataset(images, torch.tensor([0, 1]), ["a", "b"], "toy", "train")
    mean, std = ds.stats()
    assert mean == (1.0, 0.0, 0.5) and std == (0.0, 0.0, 0.5)


def test_split_off_holds_out_a_seeded_fraction_of_every_class():
    labels = torch.arange(100) % 4
    ds = data.ArrayDataset(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, list("abcd"), "toy", "train")
    rest, held = ds.split_off(0.2, seed=3)
    assert len(held) == 20 and held.class_counts() == [5, 5, 5, 5] and held.split == "val"
    again = ds.split_off(0.2, seed=3)[1]
    assert torch.equal(again.labels, held.labels) and len(rest) == 80


# --------------------------------------------------------------------------------------- real data, CLI


@needs_fashion
def test_real_fashion_mnist_is_found_verified_and_described(capsys):
    assert main(["data", "info", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "source    /usr/share/datasets/fashion-mnist (system dir, Debian package dataset-fashion-mnist)" \
        in out
    assert "checksum  ok" in out
    assert "train     60000 images 1x28x28 uint8; per-channel mean 0.2860  std 0.3530" in out
    assert "test      10000 images 1x28x28" in out
    assert "10: 0 T-shirt/top, 1 Trouser" in out and "9 Ankle boot" in out
    test = data.load("fashion-mnist", "test")
    assert test.checksum == "ok" and test.class_counts() == [1000] * 10
    assert hashlib.sha256(test.labels.to(torch.uint8).numpy().tobytes()).hexdigest() == (
        hashlib.sha256(gzip.decompress((FASHION_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:])
        .hexdigest()
    )


@needs_fashion
def test_data_get_reports_where_fashion_mnist_already_is(capsys):
    assert main(["data", "get", "fashion-mnist"]) == 0
    assert capsys.readouterr().out.strip() == (
        "fashion-mnist: already present in /usr/share/datasets/fashion-mnist (checksum ok)"
    )


def test_data_list_shows_each_data_set_and_where_it_is(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "cifar100" in out and "not found: classicnets data get cifar100" in out


@pytest.mark.slow
def test_the_installed_command_exits_2_with_one_line_when_data_is_missing(tmp_path):
    env = {"CLASSICNETS_DATA": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "classicnets", "data", "info", "cifar100"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("classicnets: error: cifar100 not found in")
    assert proc.stderr.count("\n") == 1
    assert "classicnets data get cifar100" in proc.stderr and "Traceback" not in proc.stderr
