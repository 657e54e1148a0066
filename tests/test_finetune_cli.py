"""Fine-tuning from trained weights and using them: training.setup's --weights / --freeze / --head-lr-mult,
`classicnets eval` and `predict` with --model --weights (an ImageNet-style folder of synset folders), their
argument errors, and a real fine-tuning run from the command line.

As in tests/test_weights.py, torchvision's GoogLeNet file is a randomly initialised state dict written under
its own name in a TORCH_HOME of this module; nothing touches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import VGG11_Weights

from classicnets.cli import main
from classicnets.models import create_model
from classicnets.training import checkpoint
from classicnets.training.config import resolve_config
from classicnets.training.setup import build
from helpers import error_of
from test_weights import FILE, GOOGLENET, cache_path, googlenet_hub, seed_hub

GOLDFISH = 1  # ImageNet class 1, synset n01443537; class 0 is tench, n01440764


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return googlenet_hub(tmp_path_factory)


@pytest.fixture(autouse=True)
def module_hub(hub, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(hub.home))


def write_images(folder: Path, count: int, size: int = 40, seed: int = 0, channels: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    files = []
    for i in range(count):
        array = torch.randint(0, 256, (size, size, channels), dtype=torch.uint8, generator=g).numpy()
        files.append(folder / f"{i}.png")
        Image.fromarray(array[..., 0] if channels == 1 else array).save(files[-1])
    return files


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """Three classes of five random RGB images, no train/ folder (a tenth of each is held out as val)."""
    root = tmp_path_factory.mktemp("rgb")
    for i, name in enumerate(("cat", "dog", "owl")):
        write_images(root / name, 5, seed=i)
    return root


def finetune(folder: Path, **overrides):
    return resolve_config(**{"recipe": "finetune", "model": "googlenet_bn", "data": f"folder:{folder}",
                             "batch_size": 2, "device": "cpu", **overrides})


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv: str) -> str:
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("classicnets: error: "), err
    return lines[0][len("classicnets: error: "):]


# --- training.setup: the weights' preprocessing, --freeze, --head-lr-mult -----------------------------------

def test_freeze_body_trains_only_the_class_layer_and_keeps_batch_norm_statistics(rgb_folder):
    run = build(finetune(rgb_folder, freeze="body"))
    model = run.model
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    total = sum(p.numel() for p in model.parameters())
    assert f"freeze body: {3 * 1024 + 3:,} of {total:,} weights train" in run.messages
    assert any(m.startswith(f"weights: 114 layers from imagenet ({FILE}); new: fc (3 classes") for m in run.messages)
    # the weights' own preprocessing: 224 crops of 256 test images, mean = std = 0.5 (GoogLeNet's transform_input)
    assert (run.size, run.eval_resize, run.mean, run.std) == (224, 256, [0.5] * 3, [0.5] * 3)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) > 50 and not any(m.training for m in norms)
    assert model.training and model.fc.training and model.dropout.training
    before = [m.running_mean.clone() for m in norms]
    model(torch.randn(2, 3, 64, 64) * 3 + 1)  # far from the running statistics
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before, strict=True))
    trained = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert trained == {id(model.fc.weight), id(model.fc.bias)}


def test_the_new_class_layer_learns_at_head_lr_mult_times_the_body_lr(rgb_folder):
    run = build(finetune(rgb_folder))
    assert run.config.head_lr_mult == 10 and run.config.lr == 0.001
    body, head = run.optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(run.model.fc.weight), id(run.model.fc.bias)}
    assert len(body["params"]) == len(list(run.model.parameters())) - 2
    run.schedule.apply()
    assert body["lr"] == pytest.approx(0.001) and head["lr"] == pytest.approx(0.01)
    for _ in range(3):  # cosine decay keeps the ratio
        run.schedule.step()
    assert 0 < body["lr"] < 0.001 and head["lr"] == pytest.approx(10 * body["lr"])


def test_freeze_and_weights_options_that_contradict_each_other_are_refused(rgb_folder):
    data = f"folder:{rgb_folder}"
    assert "this run starts from random weights: pass --weights imagenet (or a file), or drop --freeze" in \
        error_of(lambda: resolve_config(recipe="fast", data=data, freeze="body"))
    assert "starts from random weights" in error_of(lambda: finetune(rgb_folder, weights=None, freeze="features"))
    assert error_of(lambda: finetune(rgb_folder, warm_start="run/last.pt")) == \
        "weights and warm_start both initialise the net: pass one of them"
    assert "random_resized_crop picks the crops itself: drop --scale-jitter" in \
        error_of(lambda: finetune(rgb_folder, scale_jitter="256,512"))
    assert "drop --scale-jitter and --crop-padding" in error_of(lambda: finetune(rgb_folder, crop_padding=4))


@pytest.mark.slow
def test_freeze_features_of_vgg_leaves_its_classifier_training(hub, rgb_folder):
    torch.manual_seed(0)
    seed_hub(hub.home, torchvision.models.vgg11().state_dict(), VGG11_Weights.IMAGENET1K_V1)
    try:
        run = build(finetune(rgb_folder, model="vgg11", freeze="features"))
    finally:
        cache_path(hub.home, VGG11_Weights.IMAGENET1K_V1).unlink()
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert trainable == [f"classifier.{i}.{kind}" for i in (0, 3, 6) for kind in ("weight", "bias")]
    body, head = run.optimizer.param_groups  # the FC layers at the body's lr, the new class layer at 10x
    assert [p.shape for p in head["params"]] == [(3, 4096), (3,)]
    assert [p.shape for p in body["params"]] == [(4096, 25088), (4096,), (4096, 4096), (4096,)]
    assert head["lr"] == pytest.approx(10 * body["lr"])


# --- eval and predict with --model --weights ------------------------------------------------------------------

@pytest.fixture(scope="module")
def goldfish_hub(hub, tmp_path_factory):
    """A TORCH_HOME whose GoogLeNet file calls every image a goldfish, and an ImageNet-style folder of one
    tench and two goldfish images."""
    home = tmp_path_factory.mktemp("goldfish_home")
    state = dict(hub.state)
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])
    state["fc.bias"][GOLDFISH] = 50.0
    seed_hub(home, state)
    folder = tmp_path_factory.mktemp("val")
    write_images(folder / "n01440764", 1, size=32)
    write_images(folder / "n01443537", 2, size=32, seed=1)
    return SimpleNamespace(home=home, folder=folder)


def test_eval_of_imagenet_weights_on_a_synset_folder(goldfish_hub, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(goldfish_hub.home))
    folder, out = goldfish_hub.folder, tmp_path / "report.json"
    code, text, _ = run_cli(capsys, "eval", "--model", "googlenet_bn", "--weights", "imagenet", "--data",
                            f"folder:{folder}", "--progress", "none", "--device", "cpu", "--out", out)
    assert code == 0
    assert f"googlenet_bn on folder:{folder} all (3 images)" in text
    assert "protocol: single-scale Q=256: centre 224x224 crop; 1 view per image" in text
    assert "per-class accuracy (2 of 1000 classes have images):" in text
    assert re.search(r"^  tench +0\.00%$", text, re.MULTILINE)
    assert re.search(r"^  goldfish +100\.00%$", text, re.MULTILINE)
    report = json.loads(out.read_text())
    assert report["count"] == 3 and report["split"] == "all" and report["top1"] == pytest.approx(2 / 3)
    assert report["checkpoint"] == "imagenet" and report["model"] == "googlenet_bn"
    assert report["classes"] == GOOGLENET.meta["categories"]
    confusion = report["confusion"]
    assert confusion[0][GOLDFISH] == 1 and confusion[GOLDFISH][GOLDFISH] == 2 and sum(map(sum, confusion)) == 3
    assert report["per_class"]["tench"] == 0.0 and report["per_class"]["goldfish"] == 1.0


def test_predict_with_imagenet_weights_names_imagenet_categories(goldfish_hub, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(goldfish_hub.home))
    image = goldfish_hub.folder / "n01440764" / "0.png"
    code, out, _ = run_cli(capsys, "predict", "--model", "googlenet_bn", "--weights", "imagenet", image,
                           "--topk", "2", "--json")
    assert code == 0
    [prediction] = json.loads(out)
    assert prediction["image"] == str(image)
    assert prediction["top"][0]["class"] == "goldfish" and prediction["top"][0]["probability"] > 0.99
    assert prediction["top"][1]["class"] in GOOGLENET.meta["categories"]


def test_eval_refuses_a_folder_of_other_classes_for_imagenet_weights(rgb_folder, capsys):
    message = one_line_error(capsys, "eval", "--model", "googlenet_bn", "--weights", "imagenet", "--data",
                             f"folder:{rgb_folder}", "--progress", "none", "--device", "cpu")
    assert message == (f"folder:{rgb_folder} has 3 classes but googlenet_bn (trained on imagenet) predicts 1000: "
                       "evaluate it on a data set with the same classes")


def test_predict_refuses_weights_that_leave_the_class_layer_untrained(hub, rgb_folder, capsys, tmp_path):
    state = dict(hub.state, **{"fc.weight": hub.state["fc.weight"][:10], "fc.bias": hub.state["fc.bias"][:10]})
    torch.save(state, tmp_path / "ten_classes.pth")
    message = one_line_error(capsys, "predict", "--model", "googlenet_bn", "--weights", tmp_path / "ten_classes.pth",
                             rgb_folder / "cat" / "0.png")
    assert message.startswith(f"{tmp_path / 'ten_classes.pth'} do not fill googlenet_bn's class layer "
                              "(fc (1000 classes)): predict and eval need every layer trained")


@pytest.mark.parametrize("argv, said", [
    (["eval", "--progress", "none"], "pass a CHECKPOINT (a .pt file or run dir), or --model NAME --weights imagenet"),
    (["eval", "--weights", "imagenet", "--data", "folder:x"], "--weights needs the net to build: pass --model NAME"),
    (["predict", "--weights", "imagenet", "a.png"], "--weights needs the net to build: pass --model NAME"),
    (["eval", "run.pt", "--model", "googlenet_bn", "--weights", "imagenet", "--data", "folder:x"],
     "pass a checkpoint (run.pt) or --weights, not both"),
    (["eval", "--model", "googlenet_bn", "--weights", "imagenet"],
     "--weights gives a net without its test data: pass --data NAME or folder:PATH"),
    (["eval", "run.pt", "--model", "googlenet_bn"], "--model names the net to build for --weights"),
])
def test_wrong_combinations_of_checkpoint_model_and_weights_are_one_line(argv, said, capsys):
    assert said in one_line_error(capsys, *argv)


def test_predict_with_weights_but_no_images_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--model", "googlenet_bn", "--weights", "imagenet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "the following arguments are required" in err


# --- a real fine-tuning run from the command line ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.realdata
def test_finetune_googlenet_on_a_folder_of_fashion_mnist(hub, capsys, tmp_path, monkeypatch):
    from classicnets import data

    fashion = data.load("fashion-mnist", "train")
    folder, run_dir = tmp_path / "clothes", tmp_path / "run"
    for label, name in ((1, "trouser"), (7, "sneaker"), (8, "bag")):
        (folder / name).mkdir(parents=True)
        for i in (fashion.labels == label).nonzero().flatten()[:10].tolist():
            Image.fromarray(fashion.images[i, 0].numpy()).save(folder / name / f"{i}.png")
    code, out, _ = run_cli(capsys, "train", "--recipe", "finetune", "--model", "googlenet_bn", "--data",
                           f"folder:{folder}", "--epochs", "1", "--batch-size", "8", "--run-dir", run_dir,
                           "--progress", "none", "--no-plots", "--tensorboard", "off")
    assert code == 0, out
    [weights_line] = [line for line in out.splitlines() if line.startswith("weights: ")]
    assert f"layers from imagenet ({FILE}); new: fc (3 classes, the weights have 1000)" in weights_line
    assert "conv1.conv: kernels summed over the weights' 3 input channels for 1" in weights_line  # gray images
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["data"]["classes"] == ["bag", "sneaker", "trouser"]
    assert saved["data"]["input_size"] == 224 and saved["data"]["resize"] == 256
    assert saved["data"]["mean"] == saved["data"]["std"] == [0.5]

    image = next((folder / "trouser").glob("*.png"))
    code, out, _ = run_cli(capsys, "predict", run_dir, image)
    assert code == 0
    assert sorted(re.findall(r"^ +[\d.]+%  (.+)$", out, re.MULTILINE)) == ["bag", "sneaker", "trouser"]
    code, out, _ = run_cli(capsys, "predict", "--model", "googlenet_bn", "--weights", "imagenet", image,
                           "--topk", "3", "--json")
    assert code == 0
    top = json.loads(out)[0]["top"]
    assert len(top) == 3 and all(entry["class"] in GOOGLENET.meta["categories"] for entry in top)
    code, out, _ = run_cli(capsys, "eval", run_dir, "--progress", "none", "--device", "cpu")
    assert code == 0 and f"googlenet_bn on folder:{folder} val (3 images)" in out

    # A resumed run takes its weights from its checkpoint: the ImageNet file is no longer needed.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert "not in torch's hub cache" in error_of(lambda: create_model("googlenet_bn", weights="imagenet"))
    message = one_line_error(capsys, "train", "--resume", run_dir, "--progress", "none")
    assert message.startswith(f"the run in {run_dir} already finished its 1 epochs")  # got past building the run


def test_a_mistyped_folder_fails_before_the_weights_are_fetched(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))  # no weights file: fetching would fail
    message = one_line_error(capsys, "train", "--recipe", "finetune", "--model", "googlenet_bn",
                             "--data", f"folder:{tmp_path / 'no_such_folder'}", "--run-dir", tmp_path / "run")
    assert "no_such_folder does not exist" in message and "hub cache" not in message


def test_the_not_learning_warning_gives_advice_that_fits_a_run_from_weights():
    from classicnets.training.trainer import chance_warning

    record = {"test_acc": 0.333, "train_loss": 1.1}
    run = SimpleNamespace(num_classes=3, train_set=[0] * 66, steps_per_epoch=2)
    tuned = chance_warning(SimpleNamespace(weights="imagenet", model="vgg16", lr=0.001), run, 1, record)
    assert "66 training images and 2 step(s) per epoch" in tuned and "--init" not in tuned
    scratch = chance_warning(SimpleNamespace(weights=None, model="vgg16", lr=0.05), run, 1, record)
    assert "--init xavier" in scratch and "--model vgg16_bn" in scratch
    assert chance_warning(SimpleNamespace(weights=None, model="vgg16", lr=0.05), run, 1,
                          {"test_acc": 0.9, "train_loss": 0.2}) is None
