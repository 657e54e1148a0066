"""Hostile and damaged input: every bad file ends in one `ClassicNetsError` line naming it and the fix, never
a traceback, and never costs much more memory than a good file of its kind (issue 12).

Real formats are written small in tmp dirs: IDX with lying headers and a gzip bomb behind one, CIFAR pickles
with a huge memo index or numpy states no batch has, PNGs whose header says 20000x20000 or 100000x1, folder
names that are not UTF-8, folders that cannot be listed (simulated: the tests run as root, which ignores
permission bits). Then property tests: for any bytes, a reader gives a data set or a ClassicNetsError."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from classicnets import data
from classicnets.cli import main
from classicnets.data import folder, formats, sources
from classicnets.errors import ClassicNetsError
from classicnets.models import create_model
from classicnets.predict import predict, read_image
from helpers import error_of

FIX = "FIX"
IDX_IMAGES = "train-images-idx3-ubyte"
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSICNETS_DATA", str(tmp_path / "user"))
    return tmp_path / "user"


def cli_error(capsys, argv) -> str:
    """Run the command line in-process: exit code 2 and exactly one line on stderr, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("classicnets: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# --------------------------------------------------------------------------------------- writers


def idx_header(*dims: int, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x0800 | len(dims)
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def idx_bytes(array: np.ndarray) -> bytes:
    return idx_header(*array.shape) + np.asarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder_: Path, n=6) -> None:
    """The four Fashion-MNIST files, gzipped, with random content (so --no-verify / verify=False)."""
    rng = np.random.default_rng(0)
    folder_.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder_ / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder_ / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def gzip_bomb(path: Path, header: bytes, body: bytes, zeros: int) -> Path:
    """A .gz holding `header + body` followed by `zeros` zero bytes, written without holding them in memory."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header + body)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(chunk)
    return path


def cifar_batch(n=2, seed=0, protocol=2) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    return pickle.dumps(batch, protocol=protocol)


def write_cifar10(folder_: Path) -> None:
    folder_.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        (folder_ / name).write_bytes(cifar_batch(seed=i))
    names = [c.encode() for c in sources.DATASETS["cifar10"].classes]
    (folder_ / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))


def encoded(array: np.ndarray, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def png(width: int, height: int, mode="L", seed: int | None = 0) -> bytes:
    """Random pixels, or with seed=None all zero (which compresses to almost nothing)."""
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    if seed is None:
        return encoded(np.zeros(shape, np.uint8))
    return encoded(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def lying_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (with a correct CRC) says width x height: a few dozen bytes."""
    b = bytearray(png(1, 1))
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def make_folder(root: Path, classes=("cat", "dog"), per_class=4, size=8, flat=False) -> Path:
    """root/train/<class>/ and root/val/<class>/ (so every file in train/ is in the train split), or with
    flat=True root/<class>/ (val held out from it)."""
    for split, n in (("train", per_class), ("val", 0 if flat else 1)):
        for c, name in enumerate(classes):
            d = root / name if flat else root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i}.png").write_bytes(png(size, size, "RGB", seed=100 * c + 10 * len(split) + i))
    return root


# --------------------------------------------------------------------------------------- 1. IDX headers


def test_an_idx_header_whose_dimensions_multiply_past_2_63_is_refused_before_any_allocation(
        isolated_data_dir, capsys):
    target = isolated_data_dir / "fashion-mnist"
    write_idx_set(target)
    bad = target / f"{IDX_IMAGES}.gz"
    bad.write_bytes(gzip.compress(idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(100)))
    message = error_of(lambda: data.load("fashion-mnist", "train", verify=False))
    assert message.startswith(f"{bad} has an impossible IDX header: it promises 4294967295x4294967295x4294967295")
    assert "over the 1 GiB an IDX file may hold" in message and "classicnets data get fashion-mnist" in message
    assert str(bad) in cli_error(capsys, ["data", "info", "fashion-mnist", "--no-verify"])


@pytest.mark.parametrize(("dims", "words"), [
    ((0, 28, 28), "0x28x28 images, a dimension of 0"),
    ((2**20, 2**10, 2), "over the 1 GiB"),
])
def test_idx_headers_with_a_zero_or_an_oversized_dimension_are_refused(tmp_path, dims, words):
    path = tmp_path / IDX_IMAGES
    path.write_bytes(idx_header(*dims) + bytes(64))
    assert words in error_of(lambda: formats.read_idx(path, formats.IDX_IMAGES_MAGIC, FIX))


def test_an_uncompressed_idx_file_must_be_as_long_as_its_header_says(tmp_path):
    path = tmp_path / IDX_IMAGES
    path.write_bytes(idx_header(10, 28, 28) + bytes(100))
    assert error_of(lambda: formats.read_idx(path, formats.IDX_IMAGES_MAGIC, FIX)) == (
        f"{path} is truncated: its header promises 10x28x28 = 7840 bytes of images but it holds 100; FIX")


# --------------------------------------------------------------------------------------- 2. gzip bombs


def test_a_gzip_bomb_behind_a_small_idx_header_is_refused_after_a_bounded_read(tmp_path):
    """The header promises 1000 bytes; 64 MiB of zeros follow (~65 KB compressed). Decompression stops one
    byte past the promise: traced memory stays far below the bomb (numpy and bytes are both traced)."""
    path = gzip_bomb(tmp_path / f"{IDX_IMAGES}.gz", idx_header(1, 10, 100), bytes(1000), 64 << 20)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        message = error_of(lambda: formats.read_idx(path, formats.IDX_IMAGES_MAGIC, FIX))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (f"{path} has trailing bytes: its header promises 1x10x100 = 1000 bytes of images "
                       f"but it holds more; FIX")
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB for a bomb refused after 1001 bytes"


def test_a_good_gz_and_a_gunzipped_idx_file_read_the_same(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "a").write_bytes(idx_bytes(array))
    for name in ("a.gz", "a"):
        content, images = formats.read_idx(tmp_path / name, formats.IDX_IMAGES_MAGIC, FIX)
        assert np.array_equal(images, array) and bytes(content) == idx_bytes(array)


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from classicnets.data import formats
    from classicnets.errors import ClassicNetsError
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    base = peak()
    formats.read_idx(Path(sys.argv[1]), formats.IDX_IMAGES_MAGIC, "FIX")
    good = peak() - base
    try:
        formats.read_idx(Path(sys.argv[2]), formats.IDX_IMAGES_MAGIC, "FIX")
        print("LOADED")
    except ClassicNetsError as e:
        print(f"{good:.1f} {peak() - base:.1f} {e}")
""")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_256_mib_gzip_bomb_costs_no_more_peak_rss_than_a_good_file(tmp_path):
    """The tester's case at half size, measured as they did: peak RSS of a process, good file first."""
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(idx_bytes(np.zeros((2000, 28, 28), np.uint8)), compresslevel=1))  # 1.5 MB
    bomb = gzip_bomb(tmp_path / "bomb.gz", idx_header(1, 10, 100), bytes(1000), 256 << 20)
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(good), str(bomb)],
                          capture_output=True, text=True, check=True, timeout=120)
    good_mib, bomb_mib, message = done.stdout.split(" ", 2)
    assert "has trailing bytes" in message
    assert float(bomb_mib) < 2 * float(good_mib) + 8, done.stdout  # the bomb unpacks to 256 MiB


# --------------------------------------------------------------------------------------- 3. CIFAR pickles


def test_a_9_byte_cifar_pickle_with_a_huge_memo_index_is_refused_without_allocating(isolated_data_dir):
    folder_ = isolated_data_dir / "cifar10"
    write_cifar10(folder_)
    bomb = b"\x80\x02Nr" + struct.pack("<I", 0x04000000) + b"."  # PUT None at memo index 2^26
    assert len(bomb) == 9
    (folder_ / "test_batch").write_bytes(bomb)
    tracemalloc.start()
    try:
        message = error_of(lambda: data.load("cifar10", "test", verify=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message.startswith(f"{folder_ / 'test_batch'} is not a CIFAR python batch (cannot unpickle: "
                              f"memo index 67108864 at byte 3 skips past the 0 stored)")
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB"  # the C unpickler would size its memo to 1 GiB


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize(("payload", "words"), [
    ({"data": np.array([1, "a"], dtype=object), "labels": [1]}, "array of type 'O8'"),
    ({"data": np.zeros(2, dtype=[("a", "u1")]), "labels": [1]}, "array of type 'V1'"),
    ({"data": _Reduce(np.ndarray, ((2**40,),)), "labels": [1]}, "numpy.ndarray(...)"),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": [2**80]}, "'labels' must be a list of integer labels"),
    ({"data": np.zeros((1, 3072), np.uint8), "labels": [1.5]}, "'labels' must be a list of integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": {"a": 1}}, "'labels' must be a list of integer labels"),
])
def test_cifar_pickles_with_what_no_batch_holds_are_refused(tmp_path, payload, words):
    blob = pickle.dumps(payload, protocol=2)
    message = error_of(lambda: formats.parse_cifar_batch(blob, tmp_path / "b", "labels", FIX))
    assert words in message and message.endswith("; FIX")


def test_an_array_state_that_promises_more_bytes_than_it_holds_is_refused(tmp_path):
    """numpy's own unpickling would build the shape first; the stand-in checks the bytes are there."""
    blob = bytearray(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}, protocol=2))
    at = blob.index(b"K\x02M\x00\x0c\x86")  # the state's shape (2, 3072): BININT1 2, BININT2 3072, TUPLE2
    blob[at + 1] = 200  # shape (200, 3072), bytes for 2 rows
    message = error_of(lambda: formats.parse_cifar_batch(bytes(blob), tmp_path / "b", "labels", FIX))
    assert "its array of shape (200, 3072) lacks the bytes that shape needs" in message


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_still_load(tmp_path, protocol):
    images, labels = formats.parse_cifar_batch(cifar_batch(3, protocol=protocol), tmp_path / "b", "labels", FIX)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64


# --------------------------------------------------------------------------------------- 4. pixel cap


def test_a_png_whose_header_says_20000x20000_is_one_line_in_folders_and_skip_bad_skips_it(tmp_path, capsys):
    root = make_folder(tmp_path / "f")
    bad = root / "train" / "dog" / "bomb.png"
    bad.write_bytes(lying_png(20000, 20000))
    assert len(bad.read_bytes()) < 100
    name = f"folder:{root}"
    expected = (f"image {bad} is 400 megapixels by its header, over the 64-megapixel limit for decoding: "
                f"downscale or delete it, or skip unreadable images with --skip-bad (skip_bad=True)")
    assert error_of(lambda: data.load(name, "train")) == expected
    assert cli_error(capsys, ["data", "info", name]) == f"classicnets: error: {expected}\n"
    ds = data.load(name, "train", skip_bad=True)
    assert str(bad) in ds.skipped and "skipped 1 unreadable image(s)" in ds.notes
    assert main(["data", "info", name, "--skip-bad"]) == 0
    assert "note      skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_an_image_over_the_cap_but_under_pils_limit_is_refused_by_its_size(tmp_path):
    root = make_folder(tmp_path / "f")
    bad = root / "train" / "cat" / "big.png"
    bad.write_bytes(lying_png(9000, 8000))  # 72 megapixels: PIL only warns from 89M
    assert "is 9000x8000 pixels (72 megapixels) by its header" in error_of(
        lambda: data.load(f"folder:{root}", "train"))


def test_an_image_that_grows_past_the_cap_after_the_scan_is_caught_by_the_decoder(tmp_path):
    """The header scan and the decoding are separate reads (streaming decodes much later): both check."""
    root = make_folder(tmp_path / "f")
    scanned = data.load(f"folder:{root}", "train", in_memory=False)
    victim = Path(scanned.files[0])
    victim.write_bytes(png(100000, 1, seed=None))
    assert f"image {victim} is 100000x1 pixels by its header, sides more than 100:1 apart" in error_of(
        lambda: scanned.to_memory(num_workers=0))
    scanned.skip_bad = True
    ds = scanned.to_memory(num_workers=0)
    assert ds.skipped == [str(victim)] and len(ds) == len(scanned) - 1


@pytest.mark.slow
def test_train_on_a_folder_with_a_bomb_png_stops_in_one_line_or_skips_it(tmp_path, capsys):
    root = make_folder(tmp_path / "f", per_class=6, size=32)
    (root / "train" / "cat" / "bomb.png").write_bytes(lying_png(20000, 20000))
    args = ["train", "--data", f"folder:{root}", "--recipe", "custom", "--model", "vgg11", "--width", "0.0625",
            "--epochs", "1", "--batch-size", "8", "--progress", "none", "--no-plots", "--tensorboard", "off",
            "--threads", "1", "--run-dir", str(tmp_path / "run")]
    assert "over the 64-megapixel limit for decoding" in cli_error(capsys, args)
    assert main([*args, "--skip-bad"]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_predict_refuses_a_100000x1_png_from_its_header_without_decoding_it(tmp_path, monkeypatch):
    strip = tmp_path / "strip.png"
    strip.write_bytes(png(100000, 1, seed=None))
    assert len(strip.read_bytes()) < 1000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert error_of(lambda: read_image(strip, 3)) == (
        f"image {strip} is 100000x1 pixels by its header, sides more than 100:1 apart (the limit for decoding): "
        f"crop it, or pass another image")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(lying_png(20000, 20000))
    assert "is 400 megapixels by its header, over the 64-megapixel limit" in error_of(lambda: read_image(bomb, 1))


def test_predict_through_a_net_refuses_both_and_still_reads_a_good_image(tmp_path):
    net = create_model("vgg11_bn", num_classes=3, in_channels=1, input_size=32, width=1 / 16).eval()
    (tmp_path / "strip.png").write_bytes(png(100000, 1, seed=None))
    (tmp_path / "good.png").write_bytes(png(40, 30))
    assert "sides more than 100:1 apart" in error_of(lambda: predict(net, [tmp_path / "strip.png"], device="cpu"))
    (prediction,) = predict(net, [tmp_path / "good.png"], topk=2, device="cpu")
    assert len(prediction.top) == 2


def test_the_cap_passes_real_photo_sizes():
    for size in [(4000, 3000), (8000, 6000), (12000, 2000), (6000, 6000)]:
        folder.check_image_size(*size)  # a 48 MP phone photo, a wide panorama: no error


# --------------------------------------------------------------------------------------- 5. printable names


def test_class_folder_names_that_are_not_utf8_or_hold_control_characters_become_printable(tmp_path):
    root = tmp_path / "f"
    for raw in (b"caf\xe9", b"dog", b"new\nline"):
        d = os.path.join(os.fsencode(root), raw)
        os.makedirs(d)
        for i in range(3):
            with open(os.path.join(d, b"%d.png" % i), "wb") as f:
                f.write(png(8, 8, seed=i))
    ds = data.load(f"folder:{root}", "train")
    assert ds.classes == ["caf\\xe9", "dog", "new\\nline"] and len(ds) == 6
    assert all(c.isprintable() for c in ds.classes)
    assert data.ArrayDataset(ds.images, ds.labels, ["x\udcff", "y\x1b", "z"], "n", "s").classes == [
        "x\\xff", "y\\x1b", "z"]


@pytest.mark.slow
def test_data_info_prints_a_non_utf8_class_name_on_a_strict_utf8_stdout(tmp_path):
    root = tmp_path / "f"
    for raw in (b"caf\xe9", b"dog"):
        d = os.path.join(os.fsencode(root), raw)
        os.makedirs(d)
        for i in range(3):
            with open(os.path.join(d, b"%d.png" % i), "wb") as f:
                f.write(png(8, 8, seed=i))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run([sys.executable, "-m", "classicnets", "data", "info", f"folder:{root}"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "classes   2: 0 caf\\xe9 (" in done.stdout and "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------- 6. unreadable folders


def deny_listing(monkeypatch, *denied: Path) -> None:
    """What `chmod 311` does for a non-root user: the folder can be entered but not listed."""
    real = os.scandir
    denied_names = {str(d) for d in denied}

    def scandir(path="."):
        if os.fsdecode(path) in denied_names:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_root_that_cannot_be_listed_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "f", flat=True)
    deny_listing(monkeypatch, root)
    expected = (f"cannot list folder {root} (permission denied): give yourself read access to the image "
                f"folder, e.g. chmod -R u+rX {root}")
    assert error_of(lambda: data.load(f"folder:{root}", "train")) == expected
    assert cli_error(capsys, ["data", "info", f"folder:{root}"]) == f"classicnets: error: {expected}\n"


def test_an_unreadable_class_folder_is_reported_as_unreadable_not_as_empty(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "f")
    (root / "train" / "dog" / "sub").mkdir()
    deny_listing(monkeypatch, root / "train" / "dog" / "sub")
    message = error_of(lambda: data.load(f"folder:{root}", "train"))
    assert message.startswith(f"cannot list folder {root / 'train' / 'dog' / 'sub'} (permission denied)")
    assert "holds no images" not in message


def test_a_folder_root_that_cannot_be_reached_is_not_called_missing(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "f")
    real = os.stat

    def stat(path, *args, **kwargs):
        if os.fsdecode(path) == str(root):
            raise PermissionError(13, "Permission denied", str(root))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    message = error_of(lambda: data.load(f"folder:{root}", "train"))
    assert message.startswith(f"cannot open image folder {root} (Permission denied)") and "exist" not in message


def test_an_unreadable_image_file_names_the_permission_problem(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "f")
    victim = root / "train" / "cat" / "1.png"
    real = Image.open

    def open_(fp, *args, **kwargs):
        if os.fsdecode(fp) == str(victim):
            raise PermissionError(13, "Permission denied", str(victim))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    assert error_of(lambda: data.load(f"folder:{root}", "train")).startswith(
        f"cannot read image {victim} (Permission denied): fix or delete it")


def test_a_folder_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "f")
    monkeypatch.setattr(folder, "physical_memory", lambda: 1000)
    message = error_of(lambda: data.load(f"folder:{root}", "train"))
    assert "needs 0.0 GiB, over half of this machine's 0.0 GiB" in message and "--image-size" in message


# --------------------------------------------------------------------------------------- 7. messages


def test_trailing_bytes_read_as_english_for_plain_and_gzipped_files(tmp_path):
    body = idx_header(1, 2, 2) + bytes(5)
    (tmp_path / "a").write_bytes(body)
    (tmp_path / "a.gz").write_bytes(gzip.compress(body))
    for name, holds in (("a", "5"), ("a.gz", "more")):
        message = error_of(lambda n=name: formats.read_idx(tmp_path / n, formats.IDX_IMAGES_MAGIC, FIX))
        assert message == (f"{tmp_path / name} has trailing bytes: its header promises 1x2x2 = 4 bytes of images "
                           f"but it holds {holds}; FIX")
    source = Path(formats.__file__).read_text()
    assert "is has" not in source and "is {what}" not in source


# --------------------------------------------------------------------------------------- properties


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with a few bytes flipped, set, cut off, appended or inserted."""
    blob = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert"]))
        if kind in ("flip", "set") and blob:
            i = draw(st.integers(0, len(blob) - 1))
            blob[i] = blob[i] ^ (1 << draw(st.integers(0, 7))) if kind == "flip" else draw(st.integers(0, 255))
        elif kind == "truncate":
            del blob[draw(st.integers(0, len(blob))):]
        elif kind == "extend":
            blob += draw(st.binary(min_size=1, max_size=16))
        elif kind == "insert":
            i = draw(st.integers(0, len(blob)))
            blob[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(blob)


IDX_SEEDS = [idx_bytes(np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4)), idx_bytes(np.zeros((1, 1, 1)))]
IDX_INPUTS = st.one_of(
    st.binary(max_size=64),
    mutated(IDX_SEEDS),
    mutated(IDX_SEEDS).map(gzip.compress),  # a lying header behind valid compression
    mutated([gzip.compress(s) for s in IDX_SEEDS]),  # damaged compression
)


@FUZZ
@given(blob=IDX_INPUTS, gz=st.booleans())
def test_any_bytes_as_an_idx_file_give_an_array_or_a_one_line_error(tmp_path, blob, gz):
    path = tmp_path / (IDX_IMAGES + (".gz" if gz else ""))
    path.write_bytes(blob)
    try:
        content, images = formats.read_idx(path, formats.IDX_IMAGES_MAGIC, FIX)
    except ClassicNetsError as e:
        assert "\n" not in str(e) and str(path) in str(e) and str(e).endswith("; FIX")
        return
    assert images.ndim == 3 and len(content) == 16 + images.size and images.dtype == np.uint8


CIFAR_SEEDS = [cifar_batch(2, protocol=p) for p in (2, 4)] + [
    pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": np.array([3])}, protocol=2)]


@FUZZ
@given(blob=st.one_of(st.binary(max_size=64), mutated(CIFAR_SEEDS)))
def test_any_bytes_as_a_cifar_batch_give_arrays_or_a_one_line_error(blob):
    path = Path("data_batch_1")
    for read in (lambda: formats.parse_cifar_batch(blob, path, "labels", FIX),
                 lambda: formats.parse_cifar_meta(blob, path, "filenames", FIX)):
        try:
            result = read()
        except ClassicNetsError as e:
            assert "\n" not in str(e) and str(path) in str(e) and str(e).endswith("; FIX")
            continue
        if isinstance(result, tuple):
            images, labels = result
            assert images.shape[1:] == (3, 32, 32) and images.dtype == np.uint8 and len(labels) == len(images)
        else:
            assert all(isinstance(name, str) for name in result)


IMAGE_SEEDS = [png(6, 5, "RGB"), png(6, 5, "L")] + [
    encoded(np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8), fmt)
    for fmt in ("GIF", "BMP", "JPEG", "TIFF", "WEBP")]


@pytest.mark.slow
@FUZZ
@given(blob=st.one_of(st.binary(max_size=64), mutated(IMAGE_SEEDS)), skip_bad=st.booleans())
def test_any_bytes_as_an_image_in_a_folder_give_a_data_set_or_a_one_line_error(tmp_path_factory, blob, skip_bad):
    root = tmp_path_factory.getbasetemp() / "fuzz-folder"
    if not root.exists():
        make_folder(root, per_class=2, size=6)
    (root / "train" / "dog" / "fuzz.png").write_bytes(blob)
    try:
        ds = data.load(f"folder:{root}", "train", skip_bad=skip_bad)
    except ClassicNetsError as e:
        assert not skip_bad and "\n" not in str(e) and "fuzz.png" in str(e)
        return
    assert isinstance(ds.images, torch.Tensor) and ds.images.dtype == torch.uint8 and len(ds) >= 4
    assert len(ds) + len(ds.skipped) == 5
