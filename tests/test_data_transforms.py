"""Batched transforms: shapes, ranges, what each random step may produce, and determinism under a seed."""

from __future__ import annotations

import platform

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


def smooth(n=2, c=3, h=48, w=64) -> torch.Tensor:
    """A smooth uint8 image (gradients), where bilinear resamplers agree to within rounding."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    planes = torch.stack([200 * xx + 20, 150 * yy + 50, 100 * (xx + yy) + 10])[:c]
    return planes.expand(n, -1, -1, -1).round().to(torch.uint8)


def box_is_valid(box, h, w, scale, ratio) -> bool:
    """Inside the image, and some unrounded box within half a pixel of it has its area and ratio in range."""
    top, left, bh, bw = box
    if not (0 <= top <= h - bh and 0 <= left <= w - bw and bh >= 1 and bw >= 1):
        return False
    area_ok = (bh - 0.5) * (bw - 0.5) <= scale[1] * h * w and (bh + 0.5) * (bw + 0.5) >= scale[0] * h * w
    return area_ok and (bw - 0.5) / (bh + 0.5) <= ratio[1] and (bw + 0.5) / (bh - 0.5) >= ratio[0]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("h, w, size, out", [(40, 60, 32, (32, 32)), (90, 30, 48, (48, 48)), (40, 60, (24, 36), (24, 36))])
def test_random_resized_crop_keeps_the_dtype_and_gives_the_size(dtype, h, w, size, out):
    x = batch(n=5, c=3, h=h, w=w).to(dtype)
    y = T.random_resized_crop(x, size, generator=gen(1))
    assert y.dtype == dtype and tuple(y.shape) == (5, 3, *out)
    assert y.min() >= 0 and y.max() <= 255


def test_random_resized_crop_is_reproducible_under_a_seed():
    x = batch(n=16, c=3, h=40, w=56)
    assert torch.equal(T.random_resized_crop(x, 32, generator=gen(3)), T.random_resized_crop(x, 32, generator=gen(3)))
    assert not torch.equal(T.random_resized_crop(x, 32, generator=gen(3)), T.random_resized_crop(x, 32, generator=gen(4)))
    boxes = T.random_resized_crop_boxes(64, 40, 56, generator=gen(3))
    assert len({tuple(b) for b in boxes.tolist()}) > 50  # each sample its own box


def test_the_whole_image_at_its_own_ratio_is_a_plain_bilinear_resize():
    x = smooth(h=48, w=64)
    whole = {"scale": (1.0, 1.0), "ratio": (64 / 48, 64 / 48)}
    assert T.random_resized_crop_boxes(4, 48, 64, generator=gen(), **whole).tolist() == [[0, 0, 48, 64]] * 4
    up = T.random_resized_crop(x, 96, generator=gen(), **whole)
    assert up.dtype == torch.uint8 and torch.equal(up, T.resize(x, 96))
    down = T.random_resized_crop(x.float(), 20, generator=gen(), **whole)  # antialiased on CPU, like resize
    assert torch.equal(down, T.resize(x.float(), 20))


def test_a_box_of_the_output_size_is_copied_exactly():
    x = batch(n=3, c=3, h=40, w=50)
    boxes = torch.tensor([[0, 0, 24, 24], [16, 26, 24, 24], [7, 11, 24, 24]])
    for resample in (T.resized_crop_at, T.resized_crop_grid_sample):
        assert torch.equal(resample(x, boxes, 24), T.crop_at(x, boxes[:, 0], boxes[:, 1], 24)), resample
    inside = T.resized_crop_at(x.float(), torch.tensor([[5, 7, 20, 30]] * 3), 60)
    assert torch.equal(inside, F.interpolate(x[:, :, 5:25, 7:37].float(), size=60, mode="bilinear",
                                             align_corners=False))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(
    "c, h, w, size, scale",
    [
        (3, 40, 56, 64, (0.08, 1.0)),  # every box enlarged
        (3, 160, 120, 32, (0.5, 1.0)),  # every box shrunk
        (3, 96, 80, 48, (0.08, 1.0)),  # both, and boxes shrunk one way and enlarged the other
        (1, 64, 64, (40, 56), (0.08, 1.0)),  # grayscale, a non-square output
    ],
)
def test_on_cpu_the_crops_equal_torchvisions_resized_crop_of_the_same_boxes(dtype, c, h, w, size, scale):
    from torchvision.transforms.v2.functional import resized_crop

    x = batch(n=24, c=c, h=h, w=w, seed=h + w).to(dtype)
    boxes = T.random_resized_crop_boxes(24, h, w, scale=scale, generator=gen(c + h))
    out = T.random_resized_crop(x, size, scale=scale, generator=gen(c + h))  # draws the same boxes
    assert out.dtype == dtype and torch.equal(out, T.resized_crop_at(x, boxes, size))
    th, tw = (size, size) if isinstance(size, int) else size
    theirs = torch.stack([resized_crop(x[k], t, left, bh, bw, [th, tw], antialias=True)
                          for k, (t, left, bh, bw) in enumerate(boxes.tolist())])
    if dtype == torch.uint8:
        # Both run torch's uint8 bilinear kernel; torchvision only resizes in float where it lacks that
        # kernel (a CPU without AVX2, not ARM), so elsewhere the two may round differently by a level.
        native = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64", "arm64")
        assert torch.equal(out, theirs) if native else (out.int() - theirs.int()).abs().max() <= 1
    else:
        # torchvision antialiases enlarged boxes too: the same weights, but torch's antialiasing kernel
        # rounds differently from the plain bilinear one we use there (faster, in float).
        assert torch.allclose(out, theirs, rtol=0, atol=1e-3)


def test_the_grid_sample_path_matches_the_loop_on_enlarged_boxes_but_does_not_antialias():
    x = smooth(n=4, h=48, w=64)
    boxes = torch.tensor([[0, 0, 16, 16], [32, 48, 16, 16], [10, 20, 16, 16], [5, 30, 16, 16]])  # 2 at corners
    looped = T.resized_crop_at(x.float(), boxes, 48)
    gridded = T.resized_crop_grid_sample(x.float(), boxes, 48)
    assert (looped - gridded).abs().max() < 4  # at the box's edge the grid also blends pixels beyond the box
    inner = (..., slice(2, -2), slice(2, -2))  # 3x enlarged: only the outer 2 output pixels sample that close
    assert torch.allclose(looped[inner], gridded[inner], rtol=0, atol=1e-3)
    as_uint8 = T.resized_crop_grid_sample(x, boxes, 48)
    assert as_uint8.dtype == torch.uint8
    assert (as_uint8[inner].int() - T.resized_crop_at(x, boxes, 48)[inner].int()).abs().max() <= 1
    noise = batch(n=8, c=3, h=128, w=128).float()
    shrunk = torch.tensor([[0, 0, 128, 128]] * 8)  # 4x smaller: antialiasing averages the noise away
    aliased, averaged = T.resized_crop_grid_sample(noise, shrunk, 32), T.resized_crop_at(noise, shrunk, 32)
    assert aliased.std() > 2 * averaged.std()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_the_crops_come_from_the_grid_sample_path():
    x = batch(n=8, c=3, h=64, w=80)
    boxes = T.random_resized_crop_boxes(8, 64, 80, generator=gen(2))
    on_gpu = T.resized_crop_at(x.cuda(), boxes.cuda(), 48)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert (on_gpu.cpu().int() - T.resized_crop_grid_sample(x, boxes, 48).int()).abs().max() <= 1


@pytest.mark.parametrize("h, w", [(224, 224), (100, 300), (300, 100), (13, 17)])
@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 0.9), (0.5, 2.0)), ((1.0, 1.0), (1.0, 1.0))])
def test_boxes_lie_inside_the_image_within_scale_and_ratio_or_are_the_fallback(h, w, scale, ratio):
    boxes = T.random_resized_crop_boxes(500, h, w, scale=scale, ratio=ratio, generator=gen(h + w))
    assert boxes.dtype == torch.int64 and tuple(boxes.shape) == (500, 4)
    if w / h < ratio[0]:
        fh, fw = round(w / ratio[0]), w
    elif w / h > ratio[1]:
        fh, fw = h, round(h * ratio[1])
    else:
        fh, fw = h, w
    fallback = [(h - fh) // 2, (w - fw) // 2, fh, fw]
    for box in boxes.tolist():
        assert box_is_valid(box, h, w, scale, ratio) or box == fallback, box


def test_boxes_that_cannot_fit_fall_back_to_the_clamped_centre_crop():
    wide = T.random_resized_crop_boxes(50, 10, 200, generator=gen())  # no box of >= 8% area fits 10 px high
    assert wide.tolist() == [[0, (200 - 13) // 2, 10, 13]] * 50
    tall = T.random_resized_crop_boxes(50, 200, 10, generator=gen())
    assert tall.tolist() == [[(200 - 13) // 2, 0, 13, 10]] * 50


def test_box_areas_ratios_and_offsets_span_their_ranges_like_torchvision():
    from torchvision.transforms import RandomResizedCrop

    h, w = 180, 240
    ours = T.random_resized_crop_boxes(4000, h, w, generator=gen(9)).double()
    with torch.random.fork_rng():
        torch.manual_seed(9)
        theirs = torch.tensor([RandomResizedCrop.get_params(torch.empty(1, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
                               for _ in range(4000)]).double()
    for boxes, name in ((ours, "ours"), (theirs, "torchvision")):
        area = boxes[:, 2] * boxes[:, 3] / (h * w)
        assert area.min() < 0.1 and area.max() > 0.95, name
        assert all(((area >= lo) & (area < hi)).float().mean() > 0.1 for lo, hi in ((0, 0.3), (0.3, 0.6), (0.6, 1.01)))
        log_ratio = (boxes[:, 3] / boxes[:, 2]).log()
        assert log_ratio.min() < -0.27 and log_ratio.max() > 0.27  # log(4/3) = 0.288
        assert (boxes[:, 1] == 0).any() and (boxes[:, 1] + boxes[:, 3] == w).any()  # offsets reach both edges
    area_ours, area_tv = (b[:, 2] * b[:, 3] / (h * w) for b in (ours, theirs))
    assert abs(area_ours.mean() - area_tv.mean()) < 0.03  # same sampling rule (rejection skews both small)
    assert abs(area_ours.median() - area_tv.median()) < 0.04


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0}, "size must be >= 1"),
        ({"scale": (0.0, 1.0)}, r"0 < min <= max <= 1"),
        ({"scale": (0.6, 0.4)}, r"0 < min <= max <= 1"),
        ({"scale": (0.5, 1.5)}, r"0 < min <= max <= 1"),
        ({"scale": 0.5}, r"scale must be a \(min, max\) pair"),
        ({"ratio": (0.0, 1.0)}, r"ratio \(width/height\) needs 0 < min <= max"),
        ({"ratio": (2.0, 1.0)}, r"ratio \(width/height\) needs 0 < min <= max"),
    ],
)
def test_random_resized_crop_rejects_bad_arguments(kwargs, message):
    kwargs = {"size": 16, **kwargs}
    with pytest.raises(ClassicNetsError, match=message):
        T.random_resized_crop(batch(), kwargs.pop("size"), generator=gen(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_jitter": (32, 48)}, "random_resized_crop and scale_jitter both choose the crop"),
        ({"crop_padding": 4}, "random_resized_crop and crop_padding both choose the crop"),
        ({"random_resized_crop": (0.5, 0.2)}, r"0 < min <= max <= 1"),
    ],
)
def test_train_transform_refuses_random_resized_crop_with_another_crop(kwargs, message):
    with pytest.raises(ClassicNetsError, match=message):
        T.train_transform(32, **{"random_resized_crop": (0.08, 1.0), **kwargs}, mean=[0.5], std=[0.5])


def test_train_transform_with_random_resized_crop_gives_normalised_float32_at_the_size():
    x = batch(n=8, c=1, h=40, w=60)
    tf = T.train_transform(48, flip=True, random_resized_crop=(0.08, 1.0), mean=[0.5, 0.5, 0.5],
                           std=[0.25, 0.25, 0.25], channels=3, channels_last=True)
    assert tf.random_resized_crop == (0.08, 1.0)
    out = tf(x, gen(5))
    assert out.dtype == torch.float32 and tuple(out.shape) == (8, 3, 48, 48)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out[:, 0], out[:, 2])
    assert out.min() >= -2 - 1e-5 and out.max() <= 2 + 1e-5
    assert torch.equal(out, tf(x, gen(5))) and not torch.equal(out, tf(x, gen(6)))
    plain = T.train_transform(48, random_resized_crop=(0.3, 0.7), mean=[0.0], std=[1.0])(x, gen(5))
    g = gen(5)
    expected = T.random_resized_crop(x, 48, scale=(0.3, 0.7), generator=g).float() / 255
    assert torch.allclose(plain, expected)
