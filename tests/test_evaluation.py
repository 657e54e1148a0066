"""Evaluation: the trainer's loader pass and the VGG paper's test protocols, checked by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from classicnets.cli import main
from classicnets.data import ArrayDataset, TensorLoader
from classicnets.data.transforms import eval_transform
from classicnets.errors import ClassicNetsError
from classicnets.evaluation import PROGRESS_LINES, evaluate
from classicnets.metrics import EvalResult, evaluate_loader
from classicnets.models import create_model
from classicnets.models.dense import to_dense
from classicnets.training import checkpoint


def dataset(images: torch.Tensor, labels, classes=None, name="toy") -> ArrayDataset:
    labels = torch.as_tensor(labels, dtype=torch.int64)
    classes = classes or [f"c{i}" for i in range(int(labels.max()) + 1)]
    return ArrayDataset(images=images, labels=labels, classes=classes, name=name, split="test")


class LookupNet(nn.Module):
    """Returns fixed logits chosen by the image's first pixel (its index): known scores per image."""

    def __init__(self, table: torch.Tensor, input_size: int = 4) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone(), requires_grad=False)
        self.num_classes, self.in_channels, self.input_size = table.shape[1], 1, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x[:, 0, 0, 0] * 255).round().long()  # un-normalised pixels: mean 0, std 1
        return self.table[index]


class PoolNet(nn.Module):
    """A tiny net that takes any input size: conv, global average pool, linear."""

    def __init__(self, num_classes: int = 3, in_channels: int = 1, input_size: int = 8) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny_vgg() -> nn.Module:
    torch.manual_seed(0)
    return create_model("vgg11", num_classes=4, in_channels=1, input_size=32, width=1 / 16).eval()


@pytest.fixture(scope="module")
def toy_images() -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    return dataset(torch.randint(0, 256, (6, 1, 40, 40), dtype=torch.uint8, generator=g), [0, 1, 2, 3, 0, 1])


# --- evaluate_loader -----------------------------------------------------------------------------------

def known_logits_batches():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0, 0],   # true 0: rank 1
                           [0.0, 1, 2, 3, 4, 5, 6],   # true 2: rank 5 (top-5 hit)
                           [0.0, 1, 2, 3, 4, 5, 6],   # true 0: rank 7 (miss)
                           [1.0, 0, 0, 0, 0, 0, 9]])  # true 6: rank 1
    labels = torch.tensor([0, 2, 0, 6])
    return logits, labels


class Identity(nn.Module):
    def forward(self, x):
        return x


def test_evaluate_loader_matches_hand_counts_and_restores_training_mode():
    logits, labels = known_logits_batches()
    model = Identity().train()
    result = evaluate_loader(model, [(logits[:2], labels[:2]), (logits[2:], labels[2:])], 7)
    assert isinstance(result, EvalResult)
    assert result.count == 4
    assert result.top1 == pytest.approx(2 / 4)
    assert result.top5 == pytest.approx(3 / 4)
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    expected = torch.zeros(7, 7, dtype=torch.int64)
    for t, p in zip(labels.tolist(), logits.argmax(1).tolist()):
        expected[t, p] += 1
    assert torch.equal(result.confusion, expected)
    assert result.per_class[0] == pytest.approx(0.5) and result.per_class[6] == 1.0 and result.per_class[2] == 0.0
    assert model.training


def test_evaluate_loader_top5_is_top_k_of_all_classes_when_fewer_than_five():
    logits = torch.tensor([[0.0, 1, 2], [2.0, 1, 0]])
    result = evaluate_loader(Identity(), [(logits, torch.tensor([0, 1]))], 3)
    assert result.top1 == 0.0 and result.top5 == 1.0


def test_evaluate_loader_reduce_sums_shards_like_one_process():
    logits, labels = known_logits_batches()
    batches = [(logits, labels)]
    single = evaluate_loader(Identity(), batches, 7)
    twice = evaluate_loader(Identity(), batches, 7, reduce=lambda t: t.mul_(2))  # two identical ranks
    assert twice.count == 8 and torch.equal(twice.confusion, 2 * single.confusion)
    assert (twice.top1, twice.top5) == (single.top1, single.top5)
    assert twice.loss == pytest.approx(single.loss)


def test_evaluate_loader_confusion_can_be_summed_in_place_by_the_caller():
    logits, labels = known_logits_batches()
    first = evaluate_loader(Identity(), [(logits[:2], labels[:2])], 7)
    second = evaluate_loader(Identity(), [(logits[2:], labels[2:])], 7)
    total = first.confusion
    total += second.confusion  # an inference tensor would refuse this outside inference_mode
    whole = evaluate_loader(Identity(), [(logits, labels)], 7)
    assert torch.equal(total, whole.confusion)
    assert torch.equal(first.confusion, whole.confusion)  # summed in place: the caller's tensor is the total
    expected = torch.zeros(7, 7, dtype=torch.int64)  # by hand: the rows' argmaxes are 0, 6, 6, 6
    expected[0, 0] = expected[2, 6] = expected[0, 6] = expected[6, 6] = 1
    assert torch.equal(total, expected)



class RowLogits(nn.Module):
    """Logits are the image's first row of pixels: its mirror has them reversed."""

    def forward(self, x):
        return x[:, 0, 0, :]


def test_evaluate_loader_flip_scores_the_mean_posterior_of_image_and_mirror():
    rows = torch.tensor([[3.0, 0, 0, 1],    # true 0: plain right; mirror [1,0,0,3] says 3
                         [0.0, 2, 0, 2.5],  # true 1: plain says 3, the average says 1
                         [4.0, 0, 0, 0]])   # true 3: plain says 0, mirror says 3 as strongly: tie -> 0
    labels = torch.tensor([0, 1, 3])
    x = rows.view(3, 1, 1, 4)
    plain = evaluate_loader(RowLogits(), [(x, labels)], 4)
    flipped = evaluate_loader(RowLogits(), [(x, labels)], 4, flip=True)
    mean_posterior = (rows.softmax(1) + rows.flip(1).softmax(1)) / 2
    assert plain.top1 == pytest.approx(1 / 3)
    assert flipped.top1 == pytest.approx((mean_posterior.argmax(1) == labels).float().mean().item())
    assert flipped.top1 == pytest.approx(2 / 3)
    assert flipped.loss == pytest.approx(F.nll_loss(mean_posterior.log(), labels).item(), rel=1e-6)



def test_dense_at_the_training_size_equals_the_single_centre_crop(tiny_vgg, toy_images):
    stats = {"mean": [0.5], "std": [0.25]}
    crop = evaluate(tiny_vgg, toy_images, scales=(32,), crops="center", **stats)
    dense = evaluate(tiny_vgg, toy_images, scales=(32,), crops=None, dense=True, flip=False, **stats)
    assert torch.allclose(crop.posteriors, dense.posteriors, atol=1e-6)
    crop_flip = evaluate(tiny_vgg, toy_images, scales=(32,), crops="flip", **stats)
    dense_flip = evaluate(tiny_vgg, toy_images, scales=(32,), crops=None, dense=True, **stats)
    assert torch.allclose(crop_flip.posteriors, dense_flip.posteriors, atol=1e-6)
    assert dense_flip.views == 2


def test_multi_crop_at_the_training_size_is_the_centre_crop_and_its_flip(tiny_vgg, toy_images):
    flip = evaluate(tiny_vgg, toy_images, scales=(32,), crops="flip")
    multi = evaluate(tiny_vgg, toy_images, scales=(32,), crops="multi")
    assert torch.allclose(flip.posteriors, multi.posteriors, atol=1e-6)


def test_multi_crop_takes_a_five_by_five_grid_with_flips_per_scale(tiny_vgg, toy_images):
    result = evaluate(tiny_vgg, toy_images, scales=(36,), crops="multi")
    assert result.views == 50  # the paper's 5 x 5 grid x 2 flips
    assert "5x5 grid" in result.protocol


def test_dense_averages_the_class_score_map_before_the_softmax(tiny_vgg, toy_images):
    result = evaluate(tiny_vgg, toy_images, scales=(64,), crops=None, dense=True, flip=False, mean=[0.5])
    x = F.interpolate(toy_images.images, size=(64, 64), mode="bilinear", align_corners=False)
    maps = to_dense(tiny_vgg)(x.float() / 255 - 0.5)
    assert maps.shape[-2:] == (2, 2)  # a real map, not one position
    assert torch.allclose(result.posteriors, maps.mean(dim=(2, 3)).softmax(1), atol=1e-5)


def test_dense_plus_crops_averages_the_two_kinds_of_posteriors(tiny_vgg, toy_images):
    kwargs = {"scales": (32, 64), "mean": [0.5]}
    crops = evaluate(tiny_vgg, toy_images, crops="flip", **kwargs)
    dense = evaluate(tiny_vgg, toy_images, crops=None, dense=True, **kwargs)
    both = evaluate(tiny_vgg, toy_images, crops="flip", dense=True, **kwargs)
    assert torch.allclose(both.posteriors, (crops.posteriors + dense.posteriors) / 2, atol=1e-6)
    assert "two kinds" in both.protocol and both.views == 8


def test_multi_scale_flip_averaging_matches_a_hand_computation():
    torch.manual_seed(0)
    net = PoolNet().eval()
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 1, 10, 10), dtype=torch.uint8, generator=g)
    mean, std = 0.4, 0.3
    result = evaluate(net, dataset(images, [0, 1, 2]), train_size=8, scales=(8, 10, 12), crops="flip",
                      mean=[mean], std=[std])
    per_scale = []
    with torch.no_grad():
        for q in (8, 10, 12):
            x = images if q == 10 else F.interpolate(images, size=(q, q), mode="bilinear", antialias=q < 10)
            x = (x.float() / 255 - mean) / std
            top = (q - 8) // 2
            centre = x[..., top:top + 8, top:top + 8]
            per_scale.append((net(centre).softmax(1) + net(centre.flip(-1)).softmax(1)) / 2)
    expected = sum(per_scale) / 3
    assert torch.allclose(result.posteriors, expected, atol=1e-5)
    labels = torch.tensor([0, 1, 2])
    assert result.top1_error == pytest.approx(1 - (expected.argmax(1) == labels).float().mean().item())
    assert result.views == 6 and result.scales == (8, 10, 12)


def test_channels_last_gives_the_same_posteriors_and_restores_the_layout(tiny_vgg, toy_images):
    plain = evaluate(tiny_vgg, toy_images, scales=(32, 36), crops="flip", dense=True)
    fast = evaluate(tiny_vgg, toy_images, scales=(32, 36), crops="flip", dense=True, channels_last=True)
    assert torch.allclose(plain.posteriors, fast.posteriors, atol=1e-5)
    assert all(p.is_contiguous() for p in tiny_vgg.parameters())


def test_protocol_result_reports_per_class_accuracy_and_confusion_as_json(tiny_vgg, toy_images):
    result = evaluate(tiny_vgg, toy_images, crops="center", scales=(32,))
    data = json.loads(json.dumps(result.to_dict()))
    assert sum(map(sum, data["confusion"])) == 6
    assert list(data["per_class"]) == toy_images.classes
    confusion = result.confusion
    assert result.per_class == pytest.approx((confusion.diag() / confusion.sum(1).clamp(min=1)).tolist())
    assert math.isclose(result.top1_error, 1 - confusion.diag().sum().item() / 6)


def make_checkpoint(path, model, *, classes, mean, std, data_name="toy", resize=None):
    kwargs = {"num_classes": model.num_classes, "in_channels": model.in_channels,
              "input_size": model.input_size, "width": 1 / 16}
    return checkpoint.save(path, {
        "model_name": "vgg11", "model_kwargs": kwargs, "model": model.state_dict(),
        "data": {"name": data_name, "classes": classes, "in_channels": model.in_channels,
                 "input_size": model.input_size, "mean": mean, "std": std, "resize": resize},
    })


def test_default_protocol_from_a_checkpoint_reproduces_the_trainers_test_pass(tmp_path, tiny_vgg, toy_images):
    path = make_checkpoint(tmp_path / "m.pt", tiny_vgg, classes=toy_images.classes, mean=[0.3], std=[0.2],
                           resize=36)
    result = evaluate(path, toy_images, device="cpu")
    loader = TensorLoader(toy_images, 4, shuffle=False,
                          transform=eval_transform(32, resize=36, mean=[0.3], std=[0.2]))
    reference = evaluate_loader(tiny_vgg, loader, 4)
    assert result.scales == (36,)
    assert result.top1 == pytest.approx(reference.top1)
    assert torch.equal(result.confusion, reference.confusion)


def test_evaluate_refuses_a_scale_below_the_training_size(tiny_vgg, toy_images):
    with pytest.raises(ClassicNetsError, match="test scale 24 is below the training size 32"):
        evaluate(tiny_vgg, toy_images, scales=(24, 32))


def test_evaluate_refuses_data_whose_channels_differ(tiny_vgg):
    rgb = dataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), [0, 3], name="rgbset")
    with pytest.raises(ClassicNetsError, match="rgbset has 3-channel images but vgg11 takes 1-channel input"):
        evaluate(tiny_vgg, rgb)


def test_evaluate_refuses_data_whose_classes_differ_from_the_checkpoint(tmp_path, tiny_vgg):
    path = make_checkpoint(tmp_path / "m.pt", tiny_vgg, classes=["a", "b", "c", "d"], mean=[0.5], std=None,
                           data_name="toy")
    ten = dataset(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), [0, 9], name="digits")
    with pytest.raises(ClassicNetsError, match=r"digits has 10 classes but vgg11 \(trained on toy\) predicts 4"):
        evaluate(path, ten, device="cpu")
    renamed = dataset(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), [0, 3], ["w", "x", "y", "z"], name="other")
    with pytest.raises(ClassicNetsError, match="classes .* differ"):
        evaluate(path, renamed, device="cpu")


def test_evaluate_refuses_unknown_crops(tiny_vgg, toy_images):
    with pytest.raises(ClassicNetsError, match="crops must be one of"):
        evaluate(tiny_vgg, toy_images, crops="five")
    with pytest.raises(ClassicNetsError, match="nothing to evaluate"):
        evaluate(tiny_vgg, toy_images, crops=None)
    with pytest.raises(ClassicNetsError, match="batch_size must be 1 or more; got 0"):
        evaluate(tiny_vgg, toy_images, batch_size=0)


def test_evaluate_loader_flip_is_the_papers_centre_crop_and_flip_protocol(tmp_path, tiny_vgg, toy_images):
    path = make_checkpoint(tmp_path / "m.pt", tiny_vgg, classes=toy_images.classes, mean=[0.3], std=[0.2],
                           resize=36)
    loader = TensorLoader(toy_images, 4, shuffle=False,
                          transform=eval_transform(32, resize=36, mean=[0.3], std=[0.2]))
    ours = evaluate_loader(tiny_vgg, loader, 4, flip=True)
    paper = evaluate(path, toy_images, crops="flip", device="cpu")
    assert ours.top1 == pytest.approx(paper.top1)
    assert torch.equal(ours.confusion, paper.confusion)
    labels = toy_images.labels.long()
    assert ours.loss == pytest.approx(F.nll_loss(paper.posteriors.log(), labels).item(), rel=1e-5)
    assert ours.loss != pytest.approx(evaluate_loader(tiny_vgg, loader, 4).loss, rel=1e-7)  # the mirror counts

# --- the VGG paper's protocols ---------------------------------------------------------------------------

def test_top5_error_by_hand_on_known_logits():
    logits, labels = known_logits_batches()
    images = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(4, dtype=torch.uint8)  # the index LookupNet reads
    result = evaluate(LookupNet(logits), dataset(images, labels, [f"c{i}" for i in range(7)]), crops="center")
    assert result.top1_error == pytest.approx(2 / 4)
    assert result.top5_error == pytest.approx(1 / 4)
    assert torch.allclose(result.posteriors, logits.softmax(1))
    assert result.count == 4 and result.views == 1


# --- progress of a long test pass (stderr; stdout keeps the report) -------------------------------------

def test_lines_progress_reports_images_batches_rate_and_time_left_on_stderr(tiny_vgg, toy_images, capsys):
    quiet = evaluate(tiny_vgg, toy_images, crops="multi", scales=(40,), batch_size=2)
    assert capsys.readouterr() == ("", "")  # the Python API is silent unless asked
    shown = evaluate(tiny_vgg, toy_images, crops="multi", scales=(40,), batch_size=2, progress="lines")
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 3  # one per batch: fewer batches than PROGRESS_LINES
    assert lines[0].startswith("eval: 2/6 images (batch 1/3), ") and "images/s, ETA " in lines[0]
    assert lines[-1].startswith("eval: 6/6 images (batch 3/3), ") and lines[-1].endswith(" in all")
    assert torch.equal(shown.posteriors, quiet.posteriors)


def test_lines_progress_prints_about_ten_lines_however_many_batches(tiny_vgg, capsys):
    images = dataset(torch.zeros(40, 1, 32, 32, dtype=torch.uint8), [0, 1, 2, 3] * 10)
    evaluate(tiny_vgg, images, batch_size=1, progress="lines")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == PROGRESS_LINES and lines[-1].startswith("eval: 40/40 images (batch 40/40)")


def test_bar_progress_goes_to_stderr_and_none_is_silent(tiny_vgg, toy_images, capsys):
    evaluate(tiny_vgg, toy_images, batch_size=2, progress="bar")
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("\reval:") and "/6 [" in err and "img/s" in err  # tqdm's own line
    evaluate(tiny_vgg, toy_images, batch_size=2, progress="none")
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ClassicNetsError, match="progress must be one of auto, bar, lines, none; got 'loud'"):
        evaluate(tiny_vgg, toy_images, progress="loud")


def test_eval_command_shows_progress_on_stderr_and_keeps_stdout_the_report(tmp_path, tiny_vgg, toy_images, capsys):
    root = tmp_path / "toy"
    for split in ("train", "val"):  # a folder data set with a held-out split: eval tests on val
        for index, (image, label) in enumerate(zip(toy_images.images, toy_images.labels.tolist())):
            folder = root / split / toy_images.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{index}.png")
    path = make_checkpoint(tmp_path / "m.pt", tiny_vgg, classes=toy_images.classes, mean=[0.5], std=[0.25],
                           data_name=f"folder:{root}")
    argv = ["eval", str(path), "--device", "cpu", "--crops", "multi", "--scales", "40", "--batch-size", "2"]
    assert main([*argv, "--progress", "none"]) == 0
    report, silent = capsys.readouterr()
    assert main([*argv, "--progress", "lines"]) == 0
    out, err = capsys.readouterr()
    assert silent == "" and out == report and "top-1 error" in report
    assert [line.split(",")[0] for line in err.splitlines()] == [
        "eval: 2/6 images (batch 1/3)", "eval: 4/6 images (batch 2/3)", "eval: 6/6 images (batch 3/3)"]
    assert main(argv) == 0  # default: auto, and stderr is not a terminal here: lines
    out, err = capsys.readouterr()
    assert out == report and len(err.splitlines()) == 3
