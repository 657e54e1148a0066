"""Batched transforms: shapes, ranges, what each random step may produce, and determinism under a seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classicnets.data import transforms as T
from classicnets.errors import ClassicNetsError


def batch(n=6, c=1, h=28, w=28, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen(seed))


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def windows_of(padded: torch.Tensor, size: int) -> torch.Tensor:
    """All size×size windows of each sample: N×(positions)×C×size×size."""
    n, c = padded.shape[:2]
    unfolded = padded.unfold(2, size, 1).unfold(3, size, 1)  # N, C, rows, cols, size, size
    return unfolded.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c, size, size)


def test_train_transform_gives_normalised_float32_at_the_training_size():
    x = batch()
    out = T.train_transform(224, flip=True, crop_padding=16, mean=[0.5], std=[0.25])(x, gen())
    assert out.dtype == torch.float32 and tuple(out.shape) == (6, 1, 224, 224)
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-5 and out.max() <= (1 - 0.5) / 0.25 + 1e-5
    plain = T.train_transform(28, mean=[0.0], std=[1.0])(x)
    assert torch.allclose(plain, x.float() / 255)


def test_resize_matches_torchvision_resize_within_one_grey_level():
    from torchvision.transforms.functional import resize as tv_resize

    x = batch(n=3)
    ours = T.resize(x, 96)
    theirs = tv_resize(x, [96, 96], antialias=True)
    assert ours.dtype == torch.uint8 and (ours.int() - theirs.int()).abs().max() <= 1
    shrunk = T.resize(batch(n=2, h=64, w=64), 16)  # shrinking is antialiased like torchvision's
    assert (shrunk.int() - tv_resize(batch(n=2, h=64, w=64), [16, 16], antialias=True).int()).abs().max() <= 1


def test_uint8_and_float_resize_agree():
    x = batch(n=2)
    assert (T.resize(x, 50).float() - T.resize(x.float(), 50)).abs().max() <= 1  # uint8 kernel: fixed point


@pytest.mark.parametrize("size, padding", [(28, 4), (96, 0), (80, 8)])
def test_random_crop_takes_one_window_of_the_padded_image_per_sample(size, padding):
    x = batch(h=size + 4, w=size + 4) if padding == 0 else batch(h=size, w=size)
    out = T.random_crop(x, size, padding=padding, generator=gen(1))
    assert tuple(out.shape) == (6, 1, size, size)
    candidates = windows_of(F.pad(x, (padding,) * 4), size)
    for k in range(len(x)):
        assert (candidates[k] == out[k]).flatten(1).all(1).any(), f"sample {k} is not a window of its input"


def test_crop_offsets_differ_between_samples():
    x = torch.arange(40 * 40, dtype=torch.float32).view(1, 1, 40, 40).repeat(64, 1, 1, 1)
    out = T.random_crop(x, 32, generator=gen(2))
    assert len(torch.unique(out[:, 0, 0, 0])) > 10


def test_the_loop_and_the_vectorised_crop_give_identical_results(monkeypatch):
    x = batch(n=5, c=3, h=40, w=36)
    top, left = torch.tensor([0, 3, 8, 1, 5]), torch.tensor([4, 0, 2, 6, 1])
    monkeypatch.setattr(T, "LOOP_CROP_FROM_PIXELS", 0)
    looped = T.crop_at(x, top, left, (32, 30))
    monkeypatch.setattr(T, "LOOP_CROP_FROM_PIXELS", 10**9)
    vectorised = T.crop_at(x, top, left, (32, 30))
    assert torch.equal(looped, vectorised)
    assert torch.equal(looped[1], x[1, :, 3:35, 0:30])


def test_flip_mirrors_some_samples_and_keeps_the_rest():
    x = batch(n=64)
    out = T.random_flip(x, generator=gen(3))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    assert torch.equal(T.random_flip(x, generator=gen(3), p=0.0), x)
    assert torch.equal(T.random_flip(x, generator=gen(3), p=1.0), x.flip(-1))


def test_scale_jitter_rescales_the_short_side_into_the_range_then_crops():
    x = batch(n=4, h=28, w=42)
    out = T.scale_jitter(x, 32, 36, 40, generator=gen(4))
    assert tuple(out.shape) == (4, 1, 32, 32)
    s = int(torch.randint(36, 41, (1,), generator=gen(4)))  # the same first draw
    resized = T.resize_short_side(x, s)
    assert resized.shape[-2] == s and resized.shape[-1] == round(42 * s / 28)
    candidates = windows_of(resized, 32)
    assert all((candidates[k] == out[k]).flatten(1).all(1).any() for k in range(4))


def test_every_jitter_scale_in_range_is_drawn_over_many_batches():
    seen = {int(torch.randint(3, 7, (1,), generator=gen(s))) for s in range(50)}
    assert seen == {3, 4, 5, 6}  # randint's upper bound is exclusive: our helper adds 1
    x = batch(n=1, h=4, w=4)
    drawn = [int(T.random_ints(4, 6, 1, gen(s), "cpu")[0]) for s in range(40)]
    sizes = {T.resize_short_side(x, s).shape[-1] for s in drawn}
    assert sizes == {4, 5, 6}


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    tf = T.train_transform(32, crop_padding=4, flip=True, mean=[0.3], std=[0.3])
    x = batch(n=16)
    assert torch.equal(tf(x, gen(7)), tf(x, gen(7)))
    assert not torch.equal(tf(x, gen(7)), tf(x, gen(8)))
    jitter = T.train_transform(32, scale_jitter=(32, 64), flip=True, mean=[0.3], std=None)
    assert torch.equal(jitter(x, gen(7)), jitter(x, gen(7)))


def test_mean_subtraction_only_when_std_is_none():
    x = batch(c=3)
    mean = [0.1, 0.2, 0.3]
    out = T.normalize(x, mean, None)
    expected = x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    full = T.normalize(x, mean, [0.5, 0.25, 0.125])
    assert torch.allclose(full, expected / torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1), atol=1e-5)


def test_normalize_rejects_mismatched_statistics_and_can_write_channels_last():
    x = batch(c=3)
    with pytest.raises(ClassicNetsError, match="2 mean / 2 std values for 3-channel images"):
        T.normalize(x, [0.1, 0.2], [1.0, 1.0])
    out = T.normalize(x, [0.5], [0.5], channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_eval_transform_is_deterministic_resize_then_centre_crop():
    x = batch(n=3, h=40, w=60)
    tf = T.eval_transform(32, resize=36, mean=[0.0], std=[1.0])
    out = tf(x)
    assert tuple(out.shape) == (3, 1, 32, 32) and torch.equal(out, tf(x, gen(1)))
    scaled = T.resize_short_side(x, 36)  # 36x54
    assert torch.allclose(out, scaled[..., 2:34, 11:43].float() / 255)
    plain = T.eval_transform(224, mean=[0.5], std=[0.5])(batch())
    assert tuple(plain.shape) == (6, 1, 224, 224)


def test_grayscale_can_be_shown_to_an_rgb_net():
    out = T.eval_transform(28, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], channels=3)(batch())
    assert out.shape[1] == 3 and torch.equal(out[:, 0], out[:, 2])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: T.train_transform(224, scale_jitter=(200, 300), mean=[0.5], std=None),
         "size <= S_min <= S_max"),
        (lambda: T.train_transform(32, crop_padding=-1, mean=[0.5], std=None), "crop padding >= 0"),
        (lambda: T.eval_transform(224, resize=200, mean=[0.5], std=None), "smaller than the crop size"),
        (lambda: T.train_transform(32, mean=None, std=None), "needs the training set's mean"),
        (lambda: T.normalize(batch(), [0.5], [0.0]), "std must be positive"),
    ],
)
def test_bad_transform_settings_are_clear_errors(build, message):
    with pytest.raises(ClassicNetsError, match=message):
        build()


def test_normalising_before_resizing_equals_normalising_after():
    x = batch(n=4, c=3, h=20, w=20)
    mean, std = [0.2, 0.4, 0.6], [0.3, 0.2, 0.1]
    fast = T.eval_transform(64, mean=mean, std=std)(x)
    reference = T.normalize(T.resize(x.float(), 64), mean, std)
    assert torch.allclose(fast, reference, atol=1e-4)


def test_flipping_the_stored_image_equals_flipping_the_output():
    x = batch(n=32)
    plain = T.train_transform(96, mean=[0.5], std=[0.5])(x)
    flipped = T.train_transform(96, flip=True, mean=[0.5], std=[0.5])(x, gen(5))
    same = torch.isclose(flipped, plain, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(flipped, plain.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 32
