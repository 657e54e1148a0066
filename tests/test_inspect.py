"""classicnets.summary: shapes, parameters, MACs and receptive fields, checked against hand arithmetic
and the papers' numbers. Big nets are built on the meta device: shapes without compute or memory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from classicnets import ClassicNetsError, create_model, summary
from classicnets.inspect import parse_input_size


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def rows_by_name(s):
    return {r.name: r for r in s.rows}


class Branches(nn.Module):
    """Two branches concatenated inside the module, the wide one first (so the last layer to run is the
    narrow one: the block's window must still be the wide branch's)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.wide = nn.Conv2d(channels, 2, 5, padding=2)
        self.narrow = nn.Conv2d(channels, 2, 1)

    def forward(self, x):
        return torch.cat([self.wide(x), self.narrow(x)], 1)


# --- Receptive fields, by hand ------------------------------------------------------------------------------

def test_two_3x3_convs_see_5x5():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    rows = summary(net, (1, 16, 16)).rows
    assert [(r.receptive_field, r.jump) for r in rows] == [(3, 1), (3, 1), (5, 1)]


def test_pool_between_convs_doubles_the_jump():
    # conv3: 3 (jump 1); pool 2/2: 3 + (2-1)*1 = 4, jump 2; conv3: 4 + (3-1)*2 = 8, jump 2.
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1))
    rows = summary(net, (1, 16, 16)).rows
    assert [(r.receptive_field, r.jump) for r in rows] == [(3, 1), (4, 2), (8, 2)]


def test_dilation_and_stride_enter_the_receptive_field():
    # conv 3x3 dilation 2: 1 + 2*2 = 5; conv 3x3 stride 2: 5 + 2*1 = 7, jump 2; conv 3x3: 7 + 2*2 = 11.
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.Conv2d(2, 2, 3, stride=2),
                        nn.Conv2d(2, 2, 3))
    rows = summary(net, (1, 32, 32)).rows
    assert [(r.receptive_field, r.jump) for r in rows] == [(5, 1), (7, 2), (11, 2)]


def test_concatenated_branches_take_the_widest_window():
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), Branches(3), nn.Conv2d(4, 1, 3, padding=1))
    s = summary(net, (1, 12, 12), depth=1)
    assert [r.name for r in s.rows] == ["0", "1", "2"]
    block = s.rows[1]
    assert block.output_shape == (4, 12, 12)
    assert block.receptive_field == 3 + 4  # the 5x5 branch: 3 + (5-1)*1
    assert s.rows[2].receptive_field == 7 + 2  # the conv after it uses the block's window


def test_non_square_kernels_give_a_window_per_axis():
    net = nn.Sequential(nn.Conv2d(1, 1, (1, 7), padding=(0, 3)), nn.Conv2d(1, 1, 3, padding=1))
    rows = summary(net, (1, 10, 10)).rows
    assert rows[0].receptive_field == (1, 7)
    assert rows[1].receptive_field == (3, 9)
    assert "3×9" in str(summary(net, (1, 10, 10)))


def test_linear_and_global_pooling_see_the_whole_input():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 3))
    rows = summary(net, (1, 10, 10)).rows
    # 8x8 -> 2x2 is a 4x4/4 pool: 3 + 3*1 = 6, jump 4; then global pooling and the linear layer: all.
    assert [(r.receptive_field, r.jump) for r in rows[:2]] == [(3, 1), (6, 4)]
    assert [r.receptive_field for r in rows[2:]] == [None, None, None]
    table_line = str(summary(net, (1, 10, 10))).splitlines()[-6]
    assert table_line.split()[:2] == ["4", "Linear"] and table_line.split()[-2:] == ["all", "-"]


def test_vgg16_receptive_field_at_the_last_pool_is_212():
    rows = rows_by_name(summary(meta_model("vgg16"), (3, 224, 224)))
    assert (rows["features.28"].receptive_field, rows["features.28"].jump) == (196, 16)  # conv5_3
    assert (rows["features.30"].receptive_field, rows["features.30"].jump) == (212, 32)


# --- MACs and parameters --------------------------------------------------------------------------------

def test_conv_macs_are_outputs_times_fan_in():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, groups=2), nn.Flatten(),
                        nn.Linear(6 * 8 * 8, 5))
    s = summary(net, (3, 10, 10))
    assert s.rows[0].macs == (8 * 10 * 10) * 3 * 3 * 3
    assert s.rows[1].macs == (6 * 8 * 8) * (8 // 2) * 3 * 3
    assert s.rows[3].macs == 384 * 5
    assert s.total_macs == sum(r.macs for r in s.rows)
    assert [r.params for r in s.rows] == [8 * 27 + 8, 6 * 36 + 6, 0, 384 * 5 + 5]


def test_frozen_parameters_count_in_total_but_not_trainable():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1))
    net[0].requires_grad_(False)
    s = summary(net, (1, 5, 5))
    assert (s.total_params, s.trainable_params) == (20 + 6, 6)


def test_vgg16_totals_match_the_paper_and_torchvision():
    s = summary(meta_model("vgg16"), (3, 224, 224))
    assert s.total_params == 138_357_544
    # 15.35 G in the 13 convs + 0.12 G in the 3 FC layers: torchvision's 15.47 "GFLOPS".
    assert s.total_macs == 15_470_264_320
    assert round(s.gmacs, 2) == 15.47
    assert "Total params:       138,357,544" in str(s) and "15.47 GMACs" in str(s)


def test_tutorials_vgg11_block_outputs_at_quarter_width():
    s = summary(meta_model("vgg11", in_channels=1, width=0.25, num_classes=10), (1, 224, 224))
    pools = [r.output_shape for r in s.rows if r.type == "MaxPool2d"]
    assert pools == [(16, 112, 112), (32, 56, 56), (64, 28, 28), (128, 14, 14), (128, 7, 7)]
    assert s.output_shape == (10,)
    assert s.peak_activation == (16, 224, 224)
    for shape in ("16×112×112", "32×56×56", "64×28×28", "128×14×14", "128×7×7"):
        assert shape in str(s)


def test_depth_one_sums_each_inception_block():
    model = meta_model("googlenet")
    leaves, blocks = summary(model, (3, 224, 224)), summary(model, (3, 224, 224), depth=1)
    row = rows_by_name(blocks)["inception3a"]
    assert (row.type, row.output_shape) == ("Inception", (256, 28, 28))
    assert row.params == sum(p.numel() for p in model.inception3a.parameters())
    assert row.macs == sum(r.macs for r in leaves.rows if r.name.startswith("inception3a."))
    # maxpool2: rf 27, jump 8; the 5x5 branch after a 1x1 reduce: 27 + 4*8 = 59.
    assert (row.receptive_field, row.jump) == (59, 8)
    assert blocks.total_macs == leaves.total_macs and blocks.total_params == leaves.total_params
    assert not any("." in r.name for r in blocks.rows)


def test_auxiliary_heads_not_run_are_counted_and_noted():
    s = summary(meta_model("googlenet", aux_logits=True), (3, 224, 224))
    plain = summary(meta_model("googlenet"), (3, 224, 224))
    assert s.unused_params == s.total_params - plain.total_params > 0
    assert not any(r.name.startswith("aux") for r in s.rows)
    assert "did not run" in str(s)


# --- Output forms ---------------------------------------------------------------------------------------------

def test_json_has_every_row_and_the_totals():
    s = summary(meta_model("lenet"), (1, 28, 28))
    data = json.loads(s.to_json())
    assert data["model"] == "lenet" and data["input_size"] == [1, 28, 28]
    assert [row["name"] for row in data["layers"]] == [r.name for r in s.rows]
    first = data["layers"][0]
    assert first == {"name": "features.0", "type": "Conv2d", "output_shape": [6, 28, 28], "params": 156,
                     "macs": 6 * 28 * 28 * 25, "receptive_field": 5, "jump": 1, "depth": 2, "tap": ""}
    assert data["layers"][-1]["receptive_field"] is None
    assert data["total_params"] == s.total_params == sum(p.numel() for p in meta_model("lenet").parameters())
    assert data["total_macs"] == s.total_macs


def test_table_lists_every_layer_then_totals():
    text = str(summary(meta_model("lenet"), "1x28x28"))
    lines = text.splitlines()
    assert lines[0].startswith("lenet, input 1×28×28")
    assert lines[1].split() == ["Layer", "Type", "Output", "shape", "Params", "MACs", "RF", "Jump"]
    assert lines[3].split() == ["features.0", "Conv2d", "6×28×28", "156", "117,600", "5", "1"]
    assert any(line.startswith("Total params:       61,706") for line in lines)


# --- Behaviour around the pass ----------------------------------------------------------------------------

def test_summary_restores_training_mode_and_removes_its_hooks():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout())
    net.train()
    summary(net, (1, 5, 5))
    assert net.training and all(m.training for m in net.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_a_single_layer_model_is_its_own_row():
    s = summary(nn.Conv2d(2, 3, 3), (2, 7, 7))
    assert [(r.name, r.output_shape, r.macs) for r in s.rows] == [("Conv2d", (3, 5, 5), 75 * 18)]


@pytest.mark.parametrize("bad", [(224,), (1, 224), (0, 3, 3), (1.0, 8, 8), "224", "1x224", "axbxc", "1x-4x4"])
def test_malformed_input_sizes_are_refused_with_the_form(bad):
    with pytest.raises(ClassicNetsError, match="1x224x224|\\(1, 224, 224\\)"):
        summary(nn.Conv2d(1, 1, 1), bad)


def test_input_size_strings_parse():
    assert parse_input_size("3x224x224") == (3, 224, 224)
    assert parse_input_size("1×28×28") == (1, 28, 28)


def test_input_below_the_nets_minimum_names_the_minimum():
    model = meta_model("vgg16")
    with pytest.raises(ClassicNetsError, match="at least 32x32"):
        summary(model, (3, 16, 16))


def test_a_foreign_net_refusing_the_input_becomes_one_line():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5))
    with pytest.raises(ClassicNetsError, match=r"cannot take a 1×8×8 input.*in 2") as info:
        summary(net, (1, 8, 8))
    assert "\n" not in str(info.value)


def test_vgg_summary_names_the_taps_and_other_nets_have_no_tap_column():
    s = summary(create_model("vgg16", width=0.125, input_size=32), "3x32x32")
    taps = {r.name: r.tap for r in s.rows if r.tap}
    assert taps["features.22"] == "relu4_3" and taps["features.0"] == "conv1_1" and taps["features.30"] == "pool5"
    assert str(s).splitlines()[1].split()[-1] == "Tap" and s.to_dict()["layers"][3]["tap"] == "relu1_2"
    plain = summary(create_model("lenet"), "1x28x28")
    assert "Tap" not in str(plain).splitlines()[1] and not any(r.tap for r in plain.rows)
