"""Image folders: PNG/JPEG files written in tmp dirs, read in memory and streamed, and every bad case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classicnets import data
from classicnets.cli import main
from classicnets.errors import ClassicNetsError


def save(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def make_folder(root: Path, counts=(6, 4, 5), size=(8, 8), color=True, seed=0) -> dict[str, list[np.ndarray]]:
    """root/<class>/<i>.png with random pixels; returns the arrays per class."""
    rng = np.random.default_rng(seed)
    written = {}
    for c, n in zip(("cat", "dog", "emu"), counts):
        written[c] = []
        for i in range(n):
            shape = (*size, 3) if color else size
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            save(root / c / f"{i:03d}.png", array)
            written[c].append(array)
    return written


def error_of(fn) -> str:
    with pytest.raises(ClassicNetsError) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_class_folders_load_with_sorted_classes_and_exact_pixels(tmp_path):
    written = make_folder(tmp_path / "pets", counts=(3, 3, 3))
    train = data.load(f"folder:{tmp_path / 'pets'}", "train")
    assert train.classes == ["cat", "dog", "emu"]
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (3, 8, 8)
    val = data.load(f"folder:{tmp_path / 'pets'}", "val")
    assert len(train) + len(val) == 9 and val.class_counts() == [1, 1, 1]  # >= 1 per class held out
    everything = torch.cat([train.images, val.images])
    for arrays in written.values():
        for array in arrays:  # every file appears exactly once across the two splits, pixel-exact
            hits = (everything == torch.from_numpy(array).permute(2, 0, 1)).flatten(1).all(1).sum()
            assert hits == 1


def test_the_held_out_val_split_is_seeded_and_stratified(tmp_path):
    make_folder(tmp_path / "f", counts=(20, 30, 10))
    name = f"folder:{tmp_path / 'f'}"
    val = data.load(name, "val", val_fraction=0.2, seed=1)
    assert val.class_counts() == [4, 6, 2]
    assert torch.equal(val.images, data.load(name, "val", val_fraction=0.2, seed=1).images)
    assert not torch.equal(val.images, data.load(name, "val", val_fraction=0.2, seed=2).images)


def test_train_and_val_subfolders_are_used_when_present(tmp_path):
    make_folder(tmp_path / "ds" / "train", counts=(2, 2, 2))
    make_folder(tmp_path / "ds" / "val", counts=(1, 1, 1), seed=9)
    assert len(data.load(f"folder:{tmp_path / 'ds'}", "train")) == 6
    val = data.load(f"folder:{tmp_path / 'ds'}", "val")
    assert len(val) == 3 and val.labels.tolist() == [0, 1, 2]


def test_a_val_class_missing_from_train_is_an_error(tmp_path):
    make_folder(tmp_path / "ds" / "train", counts=(2, 2, 2))
    Path(tmp_path / "ds" / "val" / "zebra").mkdir(parents=True)
    save(tmp_path / "ds" / "val" / "zebra" / "z.png", np.zeros((8, 8, 3), np.uint8))
    assert "zebra is a class that" in error_of(lambda: data.load(f"folder:{tmp_path / 'ds'}", "val"))


def test_jpeg_and_png_mix_and_grayscale_becomes_rgb_when_any_image_is_colour(tmp_path):
    root = tmp_path / "mixed" / "train"
    gray = np.full((8, 8), 200, np.uint8)
    save(root / "a" / "gray.png", gray)
    save(root / "a" / "rgb.jpg", np.full((8, 8, 3), 90, np.uint8), fmt="JPEG")
    save(root / "b" / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    ds = data.load(f"folder:{root.parent}", "train")
    assert ds.in_channels == 3 and len(ds) == 3
    converted = ds.images[0]  # a/gray.png sorts first
    assert (converted == 200).all(), "the grey plane is replicated into R, G and B"
    assert any("converted 1 grayscale image(s) to RGB" in n for n in ds.notes)


def test_an_all_grayscale_folder_stays_one_channel(tmp_path):
    make_folder(tmp_path / "g", counts=(2, 2, 2), color=False)
    assert data.load(f"folder:{tmp_path / 'g'}", "train").in_channels == 1


def test_images_of_differing_sizes_are_rescaled_and_centre_cropped(tmp_path):
    root = tmp_path / "sizes" / "train"
    save(root / "a" / "wide.png", np.zeros((10, 20, 3), np.uint8))
    save(root / "a" / "small.png", np.zeros((6, 6, 3), np.uint8))
    save(root / "b" / "big.png", np.zeros((12, 12, 3), np.uint8))
    ds = data.load(f"folder:{root.parent}", "train")
    assert ds.image_size == (10, 10)  # the median short side
    assert any("centre-cropped to 10x10; pass image_size" in n for n in ds.notes)
    assert data.load(f"folder:{root.parent}", "train", image_size=16).image_size == (16, 16)


def test_an_unreadable_image_is_named_and_skip_bad_skips_and_counts_it(tmp_path):
    make_folder(tmp_path / "f" / "train", counts=(3, 3, 3))
    bad = tmp_path / "f" / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not an image at all")
    message = error_of(lambda: data.load(f"folder:{tmp_path / 'f'}", "train"))
    assert f"cannot read image {bad}" in message and "--skip-bad" in message
    ds = data.load(f"folder:{tmp_path / 'f'}", "train", skip_bad=True)
    assert len(ds) == 9 and ds.skipped == [str(bad)]
    assert "skipped 1 unreadable image(s)" in ds.notes


def test_a_truncated_image_that_fails_only_when_decoded_is_caught_too(tmp_path):
    make_folder(tmp_path / "f" / "train", counts=(3, 3, 3), size=(32, 32))
    victim = tmp_path / "f" / "train" / "emu" / "001.png"
    victim.write_bytes(victim.read_bytes()[:200])  # header intact, pixel data cut
    message = error_of(lambda: data.load(f"folder:{tmp_path / 'f'}", "train"))
    assert str(victim) in message
    ds = data.load(f"folder:{tmp_path / 'f'}", "train", skip_bad=True)
    assert len(ds) == 8 and ds.skipped == [str(victim)]


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "f")
    (tmp_path / "f" / "fox").mkdir()
    message = error_of(lambda: data.load(f"folder:{tmp_path / 'f'}", "train"))
    assert f"class folder {tmp_path / 'f' / 'fox'} holds no images" in message


def test_a_folder_without_class_subfolders_or_missing_is_an_error(tmp_path):
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "x.png", np.zeros((4, 4), np.uint8))
    assert "has no class subfolders" in error_of(lambda: data.load(f"folder:{tmp_path / 'flat'}", "train"))
    assert "does not exist" in error_of(lambda: data.load(f"folder:{tmp_path / 'nope'}", "train"))


def test_streaming_gives_the_same_batches_as_the_in_memory_loader(tmp_path):
    make_folder(tmp_path / "f", counts=(7, 6, 5))
    name = f"folder:{tmp_path / 'f'}"
    in_memory = data.load(name, "train")
    streamed = data.load(name, "train", in_memory=False)
    assert isinstance(streamed, data.FolderDataset) and len(streamed) == len(in_memory)
    flip = data.transforms.train_transform(8, crop_padding=1, flip=True, mean=[0.5] * 3, std=[0.25] * 3)
    a = data.TensorLoader(in_memory, 4, seed=3, transform=flip)
    b = data.make_loader(streamed, 4, seed=3, transform=flip, num_workers=0)
    assert isinstance(b, data.StreamingLoader) and len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert streamed.stats() == in_memory.stats()


def test_streaming_skips_a_bad_image_with_skip_bad_and_resumes_mid_epoch(tmp_path):
    make_folder(tmp_path / "f", counts=(4, 4, 4), size=(32, 32))
    victim = tmp_path / "f" / "cat" / "002.png"
    victim.write_bytes(victim.read_bytes()[:200])
    name = f"folder:{tmp_path / 'f'}"
    strict = data.StreamingLoader(data.load(name, "train", in_memory=False), 4, num_workers=0)
    with pytest.raises(ClassicNetsError, match="002.png"):
        list(strict)
    lenient = data.StreamingLoader(data.load(name, "train", in_memory=False, skip_bad=True), 4, num_workers=0)
    sizes = [len(y) for _, y in lenient]
    assert sum(sizes) == len(lenient.dataset) - 1 and lenient.skipped == [str(victim)]
    full = [y for _, y in data.StreamingLoader(lenient.dataset, 4, seed=1, num_workers=0)]
    resumed = data.StreamingLoader(lenient.dataset, 4, seed=1, num_workers=0)
    iterator = iter(resumed)
    next(iterator)
    state = resumed.state_dict()
    again = data.StreamingLoader(lenient.dataset, 4, seed=1, num_workers=0)
    again.load_state_dict(state)
    rest = [y for _, y in again]
    assert len(rest) == len(full) - 1 and all(torch.equal(p, q) for p, q in zip(rest, full[1:]))


def test_streaming_with_worker_processes_decodes_the_same_pixels(tmp_path):
    make_folder(tmp_path / "f", counts=(4, 4, 4))
    streamed = data.load(f"folder:{tmp_path / 'f'}", "train", in_memory=False)
    serial = [x for x, _ in data.StreamingLoader(streamed, 5, shuffle=False, num_workers=0)]
    parallel = [x for x, _ in data.StreamingLoader(streamed, 5, shuffle=False, num_workers=2)]
    assert all(torch.equal(p, q) for p, q in zip(serial, parallel, strict=True))


def test_folder_info_on_the_command_line(tmp_path, capsys):
    make_folder(tmp_path / "f" / "train", counts=(10, 10, 10))
    make_folder(tmp_path / "f" / "val", counts=(2, 2, 2), seed=1)
    (tmp_path / "f" / "train" / "cat" / "zz.png").write_bytes(b"junk")
    assert main(["data", "info", f"folder:{tmp_path / 'f'}"]) == 2
    assert "--skip-bad" in capsys.readouterr().err
    assert main(["data", "info", f"folder:{tmp_path / 'f'}", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "train     30 images 3x8x8 uint8; per-channel mean" in out
    assert "val       6 images" in out
    assert "classes   3: 0 cat (10), 1 dog (10), 2 emu (10)" in out
    assert "note      skipped 1 unreadable image(s)" in out


def test_train_on_a_folder_stops_at_a_bad_image_or_skips_it_with_skip_bad(tmp_path, capsys):
    make_folder(tmp_path / "f", counts=(12, 12, 12), size=(32, 32))
    bad = tmp_path / "f" / "emu" / "broken.png"
    bad.write_bytes(b"not an image at all")
    args = ["train", "--data", f"folder:{tmp_path / 'f'}", "--recipe", "custom", "--model", "vgg11",
            "--width", "0.0625", "--epochs", "1", "--batch-size", "8", "--progress", "none", "--no-plots",
            "--tensorboard", "off", "--threads", "1", "--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {bad}" in err and "--skip-bad" in err and "Traceback" not in err
    assert main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable image(s)" in out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    epochs = [r for r in map(json.loads, lines) if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1]
    assert any(r.get("classes") == ["cat", "dog", "emu"] for r in map(json.loads, lines))
