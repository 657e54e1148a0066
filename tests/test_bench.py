"""`classicnets bench` measures what it says, on a tiny VGG at 32x32 with a few steps."""

import json

import pytest
import torch

from classicnets.bench import (
    BenchSettings,
    PILImages,
    Timing,
    bench,
    format_report,
    format_turns,
    matmul_peak,
    tutorial_model_name,
)
from classicnets.cli import main
from classicnets.inspect import summary
from classicnets.models import create_model
from classicnets.training.runtime import cpu_has_bf16_kernels

needs_fashion_mnist = pytest.mark.realdata

# 1/8 of VGG-11's channels with batch norm, 16 images a step, 2 timed steps: seconds on one thread.
TINY = {"model": "vgg11_bn", "width": 0.125, "size": 32, "batch": 16, "steps": 2, "warmup": 1, "threads": 1,
        "matmul_size": 256}
TINY_FLAGS = ["--model", "vgg11_bn", "--width", "0.125", "--size", "32", "--batch", "16", "--steps", "2",
              "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_result():
    return bench(BenchSettings(**TINY, precision="bf16", channels_last=True))


@pytest.mark.slow
@needs_fashion_mnist
def test_a_tiny_bench_gives_positive_throughputs_mfu_memory_and_the_tutorials_ratio(tiny_result):
    d = tiny_result.to_dict()
    assert d["train_steps"] == 2 and d["eval_batches"] == 2
    for key in ("train_images_per_sec", "eval_images_per_sec", "train_flops_per_sec", "eval_flops_per_sec",
                "train_mfu", "eval_mfu", "peak_memory_bytes", "eval_peak_memory_bytes", "speedup"):
        assert d[key] > 0, key
    assert set(d["matmul_peak_flops"]) >= {"fp32", "bf16"} and min(d["matmul_peak_flops"].values()) > 0
    ran = "bf16" if cpu_has_bf16_kernels() else "fp32"  # bf16 without bf16 kernels runs fp32, and says so
    assert d["train_mfu"] == pytest.approx(d["train_flops_per_sec"] / d["matmul_peak_flops"][ran])
    assert d["speedup"] == pytest.approx(d["train_images_per_sec"] / d["tutorial"]["train_images_per_sec"])
    tutorial = d["tutorial"]
    assert tutorial["model"] == "vgg11" and tutorial["precision"] == "fp32" and tutorial["workers"] == 2
    assert tutorial["train_steps"] == 2 and tutorial["train_images_per_sec"] > 0
    assert len(tutorial["speedup_per_turn"]) == 2  # one step each, taken in turns
    assert d["settings"]["precision"] == ran and d["settings"]["channels_last"] is True
    json.loads(json.dumps(d))  # plain JSON all the way down


@pytest.mark.slow
@needs_fashion_mnist
def test_flops_are_six_times_the_forward_macs_that_inspect_counts(tiny_result):
    model = create_model("vgg11_bn", num_classes=10, in_channels=1, input_size=32, width=0.125)
    macs = summary(model, (1, 32, 32)).total_macs
    assert tiny_result.macs_per_image == macs
    assert tiny_result.train_flops_per_image == 6 * macs
    # Batch norm adds no MACs: the tutorials' net (no BN) counts the same.
    assert tiny_result.tutorial["macs_per_image"] == macs


@pytest.mark.slow
@needs_fashion_mnist
def test_the_report_shows_each_figure_and_the_ratio(tiny_result):
    text = format_report(tiny_result)
    labels = ("train images/s", "eval images/s", "train MFU", "peak memory", "ours / tutorials",
              "matmul peak")
    for label in labels:
        assert label in text
    assert f"{tiny_result.speedup:.2f}x" in text


def test_format_turns_lists_both_sides_then_the_overall_ratio_and_its_spread():
    ours, theirs = Timing(steps=10, images=3000, seconds=1.0, cpu_seconds=2.0), Timing(10, 2000, 1.0, 2.0)
    lines = format_turns(("ours", ours), ("theirs", theirs), [1.6, 1.4, 1.5], "ours / theirs").splitlines()
    assert lines[0].split() == ["theirs", "2000", "images/s", "(10", "steps)"]
    assert lines[1].split()[:2] == ["ours", "3000"]
    assert lines[2] == "  ours / theirs: 1.500x overall; per turn min 1.400, median 1.500, max 1.600"


@pytest.mark.slow
@needs_fashion_mnist
def test_cli_json_parses_and_skips_what_was_switched_off(capsys):
    code = main(["bench", *TINY_FLAGS, "--precision", "fp32", "--no-channels-last", "--no-baseline",
                 "--no-peak", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    d = json.loads(out)
    assert d["tutorial"] is None and d["speedup"] is None
    assert d["matmul_peak_flops"] == {} and d["train_mfu"] is None
    assert d["settings"]["precision"] == "fp32" and d["settings"]["channels_last"] is False
    assert d["train_images_per_sec"] > 0 and d["eval_images_per_sec"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "batch must be at least 1"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--warmup", "0"], "warmup must be at least 1"),
    (["--model", "vgg12"], "unknown model 'vgg12'"),
])
def test_bad_values_exit_2_with_one_line(flags, message, capsys):
    code = main(["bench", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("classicnets: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@needs_fashion_mnist
def test_an_input_too_small_for_the_net_exits_2_with_one_line(capsys):
    code = main(["bench", *TINY_FLAGS, "--size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "32" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU fp16 is allowed")
@needs_fashion_mnist
def test_fp16_on_a_cpu_exits_2_and_names_bf16(capsys):
    code = main(["bench", *TINY_FLAGS, "--precision", "fp16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "bf16" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags", [["--precision", "fp8"], ["--channels", "2"], ["--size", "big"]])
def test_unknown_choices_are_refused_by_the_parser_with_exit_2(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *flags])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_tutorials_dataset_gives_what_torchvision_to_tensor_gives():
    from torchvision import transforms

    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([4, 0, 9])
    as_is = transforms.Compose([transforms.Resize(28), transforms.ToTensor()])
    same_size = PILImages(images, labels, as_is, 1)
    x, y = same_size[2]
    assert y == 9 and x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.equal((x * 255).round().to(torch.uint8), images[2])
    resized = PILImages(images, labels, transforms.Compose([transforms.Resize(32), transforms.ToTensor()]), 3)
    x, _ = resized[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and 0 <= x.min() and x.max() <= 1


def test_the_tutorials_net_is_ours_without_batch_norm():
    assert tutorial_model_name("vgg11_bn") == "vgg11"
    assert tutorial_model_name("vgg16") == "vgg16"
    assert tutorial_model_name("lenet") == "lenet"


def test_matmul_peak_is_a_positive_flop_rate():
    assert matmul_peak(torch.float32, torch.device("cpu"), n=128, seconds=0.05) > 1e6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@needs_fashion_mnist
def test_on_a_gpu_fp16_with_grad_scaler_and_compile_run():
    result = bench(BenchSettings(**{**TINY, "threads": None}, precision="fp16", channels_last=True,
                                 compile=True, device="cuda", baseline=False))
    d = result.to_dict()
    assert d["machine"]["device"].startswith("cuda")
    assert d["train_images_per_sec"] > 0 and "fp16" in d["matmul_peak_flops"] and d["train_mfu"] > 0
    assert d["memory_measure"] == "torch.cuda.max_memory_allocated" and d["peak_memory_bytes"] > 0
