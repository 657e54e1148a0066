"""A faster weight gradient for convolutions over small maps on a CPU.

Why: oneDNN's weight gradient of a stride-1 convolution over maps of a few pixels takes ~6x as long as
its forward pass (bf16, channels_last, 2 cores: 2.7 ms against 0.4 ms for VGG-11 width 1/4's 2x2
block-5 convs at batch 256), while the same sums written as one more convolution (the input's
channels as the batch, the output gradient as the filters) run at about forward speed. For 32x32
inputs VGG's blocks 4 and 5 work on 4x4 and 2x2 maps: the fast recipe's whole step is 9-13% faster with
it, full-width VGG-11's 21% (BENCHMARKS.md section 4, `benchmarks/bench_conv_grad.py`). On maps of 8x8
and more oneDNN is the faster one, so only small maps take this path; the input gradient stays oneDNN's.

    with SmallMapConvGrad():          # around the forward pass of a training step (TrainStep does this)
        loss = loss_fn(model(x), y)
    loss.backward()

A torch function mode, not a layer: the nets keep torch's own `nn.Conv2d` (state dicts, TorchScript,
torch.fx, torch.export and feature extraction see nothing), and only the training step opts in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

# The largest map (H x W of the conv's input) that takes the convolution path, per compute dtype:
# where it measured faster than oneDNN's weight gradient on this project's 2-core CPUs (bf16 up to 4x4,
# fp32 only at 2x2; benchmarks/bench_conv_grad.py). Other dtypes keep oneDNN's.
MAX_PIXELS = {torch.bfloat16: 16, torch.float32: 4}


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[-1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def weight_grad(x: torch.Tensor, grad_out: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """d loss / d weight of a stride-1, dilation-1, ungrouped conv2d, as one convolution:
    grad_w[o, i, a, b] = sum over n, h, w of grad_out[n, o, h, w] * x_padded[n, i, h + a, w + b]."""
    return F.conv2d(x.transpose(0, 1), grad_out.transpose(0, 1), padding=padding).transpose(0, 1)


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad_out, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _conv_args(args, kwargs):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    values = dict(zip(names, defaults))
    values.update(zip(names, args))
    values.update(kwargs)
    return values


class SmallMapConvGrad(TorchFunctionMode):
    """Inside it, `F.conv2d` calls that qualify (CPU, grad enabled, stride 1, dilation 1, one group, a
    numeric padding, an input map of at most MAX_PIXELS for the dtype the conv computes in) get their
    weight gradient as a convolution; every other call runs as it would without the mode. Under
    autocast the inputs are cast as autocast would cast them, so the parameters' gradients keep their
    dtype."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            a = _conv_args(args, kwargs)
            x, weight, bias = a["input"], a["weight"], a["bias"]
            dtype = self._qualifying_dtype(x, weight, a)
            if dtype is not None:
                x, weight = x.to(dtype), weight.to(dtype)
                bias = bias.to(dtype) if bias is not None else None
                with torch.autocast("cpu", enabled=False):
                    return _SmallMapConv.apply(x, weight, bias, _pair(a["padding"]))
        return func(*args, **kwargs)

    @staticmethod
    def _qualifying_dtype(x, weight, a) -> torch.dtype | None:
        """The dtype the conv computes in (autocast's, else the input's) if it takes our path, else None."""
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
                and x.device.type == "cpu" and x.dim() == 4 and weight.requires_grad):
            return None
        if a["groups"] != 1 or _pair(a["stride"]) != (1, 1) or _pair(a["dilation"]) != (1, 1):
            return None
        if isinstance(a["padding"], str):
            return None
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return dtype if x.shape[2] * x.shape[3] <= MAX_PIXELS.get(dtype, 0) else None
