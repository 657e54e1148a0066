"""The small-map conv weight gradient (training/convgrad.py): the same gradients as torch's, only where it
pays, and nothing changes outside a training step."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from tests.test_train_step import TINY
from torch import nn

from classicnets.models import create_model
from classicnets.training import build, resolve_config, torch_settings
from classicnets.training.convgrad import MAX_PIXELS, SmallMapConvGrad, weight_grad


def grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode=None, dtype=None) -> dict[str, torch.Tensor]:
    """Each parameter's gradient after one forward (inside `mode`, under autocast to `dtype`) and backward."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None), mode or nullcontext():
        out = model(x)
    F.cross_entropy(out.float(), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def grad_fns(model: nn.Module, x: torch.Tensor, mode) -> list[str]:
    """The autograd node behind each conv's output, from one forward pass inside `mode`."""
    names = []
    hooks = [m.register_forward_hook(lambda m, i, out: names.append(type(out.grad_fn).__name__))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with mode:
        model(x)
    for h in hooks:
        h.remove()
    return names


@pytest.mark.parametrize("kernel, padding, bias", [(3, 1, True), (1, 0, False), (5, 2, True), (3, 0, True),
                                                   ((3, 1), (1, 0), True)])
def test_weight_grad_is_torchs_for_any_kernel_and_padding(kernel, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel, padding=padding, bias=bias)
    x = torch.randn(4, 6, 4, 3, requires_grad=True)
    g = torch.randn_like(conv(x))
    conv(x).backward(g)
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    torch.testing.assert_close(weight_grad(x.detach(), g, pad), conv.weight.grad, rtol=1e-5, atol=1e-5)


def test_a_training_step_gets_the_same_gradients_in_fp32():
    torch.manual_seed(0)
    model = create_model("vgg11_bn", num_classes=10, in_channels=1, input_size=32, width=0.25, head="gap").train()
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    ref, ours = grads(model, x, y), grads(model, x, y, SmallMapConvGrad())
    for name in ref:
        # a conv bias before batch norm has a zero gradient: both sides are float noise there
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)
    # in fp32 only the 2x2 maps of block 5 take the convolution path
    assert grad_fns(model, x, SmallMapConvGrad()).count("_SmallMapConvBackward") == 2


def test_under_bf16_autocast_the_convs_compute_in_bf16_and_parameters_keep_fp32_gradients():
    torch.manual_seed(0)
    model = create_model("vgg11_bn", num_classes=10, in_channels=1, input_size=32, width=0.25,
                         head="gap").train().to(memory_format=torch.channels_last)
    x = torch.randn(16, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16), SmallMapConvGrad():
        out = model(x)
    ref, ours = grads(model, x, y, dtype=torch.bfloat16), grads(model, x, y, SmallMapConvGrad(), torch.bfloat16)
    assert out.dtype == torch.bfloat16
    for name, p in model.named_parameters():
        assert ours[name].dtype == p.dtype == torch.float32
        if name.endswith("weight"):
            assert torch.nn.functional.cosine_similarity(ours[name].flatten(), ref[name].flatten(), 0) > 0.99, name
    with torch.autocast("cpu", dtype=torch.bfloat16):  # blocks 4 and 5 (4x4 and 2x2 maps) in bf16
        assert grad_fns(model, x, SmallMapConvGrad()).count("_SmallMapConvBackward") == 4
    assert MAX_PIXELS[torch.bfloat16] == 16


def test_convs_it_does_not_pay_for_run_as_without_it():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 2, 2)
    for conv in (nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                 nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 3, padding="same")):
        assert grad_fns(conv, x, SmallMapConvGrad()) == ["ConvolutionBackward0"], conv
    big = nn.Conv2d(4, 4, 3, padding=1)
    assert grad_fns(big, torch.randn(2, 4, 8, 8), SmallMapConvGrad()) == ["ConvolutionBackward0"]
    frozen = nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False)
    with SmallMapConvGrad():
        assert frozen(x.requires_grad_()).grad_fn is not None
        assert type(frozen(x).grad_fn).__name__ == "ConvolutionBackward0"
        with torch.no_grad():
            assert big(x).grad_fn is None  # evaluation: untouched


@pytest.mark.realdata
def test_the_trainer_uses_it_on_a_cpu_unless_told_not_to_and_trains_alike():
    with torch_settings(threads=1):
        on = build(resolve_config(**TINY, head="gap"))
        off = build(resolve_config(**TINY, head="gap", small_map_conv_grad=False))
        assert isinstance(on.step.forward_mode, SmallMapConvGrad) and off.step.forward_mode is None
        assert build(resolve_config(**TINY, activation_checkpointing=True)).step.forward_mode is None
        x, y = next(iter(on.train_loader))
        for run in (on, off):
            run.step(x, y)
        for (name, a), b in zip(on.model.named_parameters(), off.model.parameters(), strict=True):
            if a.grad is not None and name.endswith("weight"):
                assert F.cosine_similarity(a.grad.flatten(), b.grad.flatten(), 0) > 0.99, name
