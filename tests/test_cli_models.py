"""`classicnets list` and `classicnets summary`: the acceptance commands and every error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from classicnets.cli import main
from classicnets.models import list_models, model_info


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_bad_flag(capsys, *argv: str) -> str:
    """argparse-level errors exit 2 through SystemExit; returns stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


# --- list ----------------------------------------------------------------------------------------------------

def test_list_shows_every_net_with_its_imagenet_parameter_count(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert list(lines) == list_models()
    assert "138,357,544" in lines["vgg16"] and "133,638,952" in lines["vgg16_c"]
    assert "Simonyan & Zisserman 2014" in lines["vgg16"]
    assert "Krizhevsky et al. 2012" in lines["alexnet_paper"]


def test_list_as_json_carries_the_registry_facts(capsys):
    code, out, _ = run(capsys, "list", "--format", "json")
    data = json.loads(out)
    assert code == 0 and [d["name"] for d in data] == list_models()
    vgg19 = next(d for d in data if d["name"] == "vgg19")
    assert vgg19["imagenet_params"] == 143_667_240 and vgg19["family"] == "vgg"


# --- summary: the acceptance commands --------------------------------------------------------------------

def test_summary_of_vgg16_totals_138m_params_and_15_5_gmacs(capsys):
    code, out, err = run(capsys, "summary", "vgg16", "--input", "3x224x224")
    assert code == 0 and err == ""
    assert "Total params:       138,357,544" in out
    assert "15,470,264,320 (15.47 GMACs" in out


def test_summary_of_quarter_width_vgg11_shows_the_tutorials_block_outputs(capsys):
    code, out, _ = run(capsys, "summary", "vgg11", "--input", "1x224x224", "--width", "0.25")
    assert code == 0
    pools = [line.split()[2] for line in out.splitlines() if " MaxPool2d " in line]
    assert pools == ["16×112×112", "32×56×56", "64×28×28", "128×14×14", "128×7×7"]


def test_summary_json_has_layers_and_totals(capsys):
    code, out, _ = run(capsys, "summary", "vgg11", "--input", "1x64x64", "--classes", "10", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["model"] == "vgg11" and data["input_size"] == [1, 64, 64]
    assert data["output_shape"] == [10]
    assert data["layers"][0]["output_shape"] == [64, 64, 64]
    assert data["total_params"] == sum(layer["params"] for layer in data["layers"])


def test_summary_defaults_to_the_nets_own_input(capsys):
    code, out, _ = run(capsys, "summary", "lenet")
    assert code == 0 and out.startswith("lenet, input 1×28×28")


def test_summary_depth_one_shows_inception_blocks_as_rows(capsys):
    code, out, _ = run(capsys, "summary", "googlenet", "--input", "3x224x224", "--depth", "1")
    names = [line.split()[0] for line in out.splitlines()[3:]]
    assert code == 0 and "inception3a" in names and "inception3a.branch1.conv" not in names


def test_non_square_input_builds_for_the_smaller_side_and_says_so(capsys):
    code, out, _ = run(capsys, "summary", "vgg11", "--input", "3x64x96", "--width", "0.125")
    assert code == 0
    assert "built for 64x64" in out
    last_pool = [line for line in out.splitlines() if " MaxPool2d " in line][-1]
    assert last_pool.split()[2] == "64×2×3"  # 64x96 after five 2x2 pools; width 1/8: 64 channels


# --- summary: errors, one line each and exit code 2 -------------------------------------------------------

def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert err.startswith("classicnets: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


def test_unknown_model_suggests_close_names(capsys):
    code, _, err = run(capsys, "summary", "vgg17")
    assert_one_line_error(code, err, "unknown model 'vgg17'", "did you mean", "vgg16")


@pytest.mark.parametrize("bad", ["224", "1x224", "1x224x224x3", "axbxc", "0x32x32"])
def test_malformed_input_is_refused_with_an_example(capsys, bad):
    code, _, err = run(capsys, "summary", "vgg11", "--input", bad)
    assert_one_line_error(code, err, "CxHxW", "1x224x224", repr(bad))


def test_input_smaller_than_the_pooling_allows_names_the_minimum(capsys):
    code, _, err = run(capsys, "summary", "vgg16", "--input", "1x28x28")
    assert_one_line_error(code, err, "vgg16 needs inputs of at least 32x32", "--input 1x32x32")
    assert model_info("vgg16")["min_input_size"] == 32


def test_width_leaving_a_layer_without_channels_is_refused(capsys):
    code, _, err = run(capsys, "summary", "vgg11", "--width", "0.01")
    assert_one_line_error(code, err, "0 channels", "width >=")


def test_zero_classes_is_refused(capsys):
    code, _, err = run(capsys, "summary", "lenet", "--classes", "0")
    assert_one_line_error(code, err, "num_classes")


def test_depth_below_one_is_refused(capsys):
    code, _, err = run(capsys, "summary", "lenet", "--depth", "0")
    assert_one_line_error(code, err, "--depth")


def test_unknown_format_is_refused_in_one_line(capsys):
    err = run_bad_flag(capsys, "summary", "lenet", "--format", "xml")
    assert "invalid choice: 'xml'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_console_command_prints_the_error_without_traceback():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-m", "classicnets", "summary", "vgg16", "--input", "224"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("classicnets: error: input size must be CxHxW")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_list_filters_by_pattern_and_by_published_weights(capsys):
    assert main(["list", "vgg1*", "alexnet", "--format", "json"]) == 0
    names = [info["name"] for info in json.loads(capsys.readouterr().out)]
    assert names == [n for n in list_models() if n.startswith("vgg1")] + ["alexnet"]
    assert main(["list", "--pretrained", "--format", "json"]) == 0
    published = json.loads(capsys.readouterr().out)
    assert [info["name"] for info in published] == list_models(pretrained=True)
    assert all(info["torchvision"] for info in published) and len(published) == 10
    assert main(["list", "resnet*"]) == 2
    err = capsys.readouterr().err
    assert "no net matches resnet*" in err and err.count("\n") == 1


def test_list_pretrained_shows_torchvisions_top1_and_whether_the_file_is_cached(capsys, tmp_path, monkeypatch):
    import torch
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(tvm.GoogLeNet_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"only its presence is shown; nothing is read")
    assert main(["list", "--pretrained", "--format", "json"]) == 0
    weights = {info["name"]: info["imagenet_weights"] for info in json.loads(capsys.readouterr().out)}
    assert weights["vgg16"]["imagenet_top1"] == tvm.VGG16_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert weights["googlenet_bn"]["cached"] and not weights["vgg16"]["cached"]
    assert weights["googlenet_bn"]["file"] == str(cached) and weights["alexnet"]["weights"] == "AlexNet_Weights.IMAGENET1K_V1"
    assert main(["list", "--pretrained", "googlenet_bn", "vgg16"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-5:] == ["ImageNet", "top-1", "In", "hub", "cache"]
    assert table[1].split()[-2:] == ["71.6%", "no"] and table[2].split()[-2:] == ["69.8%", "yes"]
    assert torch.hub.get_dir() == str(tmp_path / "hub")


def test_a_reader_that_goes_away_is_no_traceback():
    """`classicnets summary vgg16 | head -1`: the pipe closes before the table is written."""
    proc = subprocess.Popen([sys.executable, "-m", "classicnets", "summary", "vgg16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child (still importing torch) writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_summary_ceil_mode_shows_vgg_on_28x28(capsys):
    code, out, _ = run(capsys, "summary", "vgg11_bn", "--input", "1x28x28", "--width", "0.25", "--ceil-mode")
    assert code == 0 and "16×14×14" in out.replace("x", "×") and "128×1×1" in out.replace("x", "×")
    code, _, err = run(capsys, "summary", "vgg11_bn", "--input", "1x28x28")
    assert_one_line_error(code, err, "vgg11_bn needs inputs of at least 32x32", "--ceil-mode")
    code, _, err = run(capsys, "summary", "nin", "--ceil-mode")
    assert_one_line_error(code, err, "nin has no option 'ceil_mode'")
