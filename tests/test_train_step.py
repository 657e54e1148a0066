"""The public building blocks of training: the one step, build(config), torch_settings, Progress."""

from __future__ import annotations

import dataclasses
import itertools
from collections import namedtuple

import pytest
import torch
from torch import nn

from classicnets.bench import BenchSettings, prepared, train_steps
from classicnets.errors import ClassicNetsError
from classicnets.training import build, resolve_config, runtime, torch_settings
from classicnets.training.runtime import cpu_has_bf16_kernels
from classicnets.training.step import ClassificationLoss, RunningTotals, TrainStep, optimizer_steps
from classicnets.training.trainer import Progress

ce = nn.functional.cross_entropy


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def batch(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


# --- the loss -------------------------------------------------------------------------------------------

def test_aux_classifier_losses_are_added_with_the_model_weight():
    Aux = namedtuple("AuxOutputs", ["logits", "aux"])
    y = torch.tensor([0, 1])
    main_logits, aux_logits = torch.randn(2, 3), torch.randn(2, 3)
    loss, logits = ClassificationLoss(aux_weight=0.3)(Aux(main_logits, (aux_logits, aux_logits)), y)
    assert torch.allclose(loss, ce(main_logits, y) + 0.3 * 2 * ce(aux_logits, y))
    assert logits is main_logits


def test_label_smoothing_is_the_cross_entropys():
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    loss, _ = ClassificationLoss(label_smoothing=0.1)(logits, y)
    assert torch.allclose(loss, ce(logits, y, label_smoothing=0.1))


# --- the step -------------------------------------------------------------------------------------------

def test_one_call_and_update_is_one_sgd_step_by_hand():
    model, (x, y) = linear(), batch()
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.5), ClassificationLoss())
    out = step(x, y)
    expected_loss = ce(x @ w.T + b, y)
    assert torch.allclose(out.loss, expected_loss) and not out.loss.requires_grad
    # by hand: d loss / d logits = (softmax - one_hot) / n
    grad_logits = (torch.softmax(x @ w.T + b, 1) - nn.functional.one_hot(y, 3)) / len(y)
    step_loss = step.update()
    assert torch.allclose(step_loss, expected_loss)
    assert torch.allclose(model.weight, w - 0.5 * grad_logits.T @ x, atol=1e-6)
    assert torch.allclose(model.bias, b - 0.5 * grad_logits.sum(0), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # zeroed (set to None) for the next step


def test_accumulated_micro_batches_equal_one_big_batch():
    x, y = batch(8)
    big, small = linear(), linear()
    TrainStep(big, torch.optim.SGD(big.parameters(), lr=0.1), ClassificationLoss())(x, y)
    step = TrainStep(small, torch.optim.SGD(small.parameters(), lr=0.1), ClassificationLoss(), accum_steps=2)
    losses = [step(x[:4], y[:4]).loss, step(x[4:], y[4:]).loss]
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-7)
    assert torch.allclose(step.update(), (losses[0] + losses[1]) / 2)


def test_gradient_clipping_bounds_the_update():
    model, (x, y) = linear(), batch()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=1.0), ClassificationLoss(), grad_clip=1e-3)
    step(x, y)
    step.update()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-4)  # lr 1: the step is the clipped grad


def test_the_schedule_steps_once_per_update():
    class Counter:
        count = 0

        def step(self):
            self.count += 1

    model, (x, y) = linear(), batch()
    schedule = Counter()
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ClassificationLoss(), accum_steps=3,
                     schedule=schedule)
    steps = list(optimizer_steps(step, [(x, y)] * 6))
    assert len(steps) == 2 and schedule.count == 2


def test_fp16_grad_scaler_skips_an_overflowing_step_and_lowers_the_scale():
    model, (x, y) = linear(), batch()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # the scaled fp16 gradient overflows
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), ClassificationLoss(), scaler=scaler,
                     autocast_dtype=torch.float16)
    step(x, y)
    step.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # skipped
    assert scaler.get_scale() == 2.0**119
    scaler.update(2.0**8)
    step(x, y)
    step.update()
    assert not torch.equal(before[0], model.weight)  # a normal step once the scale fits


def test_optimizer_steps_sum_the_epoch_and_skip_ddp_sync_on_inner_micro_batches():
    class FakeDDP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.calls = linear(), []

        def forward(self, x):
            self.calls.append("sync" if not self.skipping else "no_sync")
            return self.net(x)

        skipping = False

        def no_sync(self):
            outer = self

            class Ctx:
                def __enter__(self):
                    outer.skipping = True

                def __exit__(self, *exc):
                    outer.skipping = False

            return Ctx()

    model = FakeDDP()
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), ClassificationLoss(), accum_steps=2)
    batches = [batch(n, seed=n) for n in (3, 5, 2, 4)]
    totals = RunningTotals(torch.device("cpu"), loss_sum=1.0, correct=2.0, count=3.0)  # resumed mid-epoch
    assert len(list(optimizer_steps(step, batches, totals))) == 2
    assert model.calls == ["no_sync", "sync", "no_sync", "sync"]
    loss_sum, correct, count = totals.values()
    assert count == 3 + 14
    expected_loss = 1.0 + sum(ce(model.net(x), y).item() * len(y) for x, y in batches)
    assert loss_sum == pytest.approx(expected_loss, rel=1e-6)
    assert correct == 2 + sum(int((model.net(x).argmax(1) == y).sum()) for x, y in batches)


# --- torch_settings ------------------------------------------------------------------------------------

def test_torch_settings_sets_and_restores_threads_and_determinism_even_on_error():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError, match="boom"), torch_settings(threads=1, deterministic=True,
                                                                   cudnn_benchmark=True):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        raise RuntimeError("boom")
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.backends.cudnn.benchmark == benchmark


# --- build(config) -------------------------------------------------------------------------------------

TINY = {"recipe": "fast", "width": 0.125, "epochs": 1, "batch_size": 32, "limit_train": 128, "limit_test": 64,
        "threads": 1, "progress": "none", "plots": False, "tensorboard": "off"}


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


@pytest.mark.realdata
def test_build_assembles_the_parts_of_a_run():
    with torch_settings(threads=1):
        run = build(resolve_config(**TINY, accum_steps=2, grad_clip=5.0))
    assert (run.micro_batch, run.accum_steps, run.steps_per_epoch) == (16, 2, 4)
    assert run.step.model is run.train_model and run.step.optimizer is run.optimizer
    assert run.step.schedule is run.schedule and run.step.grad_clip == 5.0
    # the fast recipe's precision, where this CPU has bf16 kernels (runtime.autocast_precision)
    assert run.step.autocast_dtype == (torch.bfloat16 if cpu_has_bf16_kernels() else None)
    assert run.classes == run.train_set.classes and run.num_classes == 10
    assert run.data_record()["input_size"] == 32 and run.data_record()["mean"] == run.mean
    x, _ = next(iter(run.train_loader))
    assert x.shape == (16, 1, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.realdata
def test_two_builds_of_one_config_start_and_step_identically():
    config = resolve_config(**TINY)
    firsts = []
    for _ in range(2):
        with torch_settings(threads=1):
            run = build(config)
            start = weights(run.model)
            losses = [float(loss) for loss in itertools.islice(optimizer_steps(run.step, run.train_loader), 2)]
        firsts.append((start, losses, weights(run.model), run.schedule.step_count))
    assert torch.equal(firsts[0][0], firsts[1][0]) and firsts[0][1] == firsts[1][1]
    assert torch.equal(firsts[0][2], firsts[1][2]) and firsts[0][3] == 2
    assert not torch.equal(firsts[0][0], firsts[0][2])  # the steps changed the weights


@pytest.mark.realdata
def test_build_feeds_grayscale_to_an_rgb_net_and_refuses_other_channel_counts():
    with torch_settings(threads=1):
        run = build(resolve_config(**TINY), in_channels=3)
    assert run.in_channels == 3 and run.model_kwargs["in_channels"] == 3
    x, _ = next(iter(run.train_loader))
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])


@pytest.mark.realdata
def test_build_refuses_a_batch_that_does_not_split_into_the_accumulation_steps():
    with pytest.raises(ClassicNetsError, match="not divisible into 3 accumulation steps"):
        build(resolve_config(**TINY, accum_steps=3))


@pytest.mark.realdata
def test_bench_times_the_trainers_own_step_schedule_and_clipping_included():
    s = BenchSettings(model="vgg11_bn", width=0.125, batch=16, threads=1, baseline=False, peak=False)
    with prepared(s) as run:
        steps = train_steps(run)
        assert next(steps) == 16 and next(steps) == 16
        assert run.schedule.step_count == 2  # the lr schedule moved: the trainer's update, not a copy of it
        assert run.step.schedule is run.schedule and run.step.model is run.train_model


# --- Progress -------------------------------------------------------------------------------------------

def test_progress_saves_the_keys_checkpoints_have_always_had():
    keys = {"epoch", "step", "loss_sum", "correct", "count", "train_seconds", "epoch_seconds", "elapsed",
            "best_test_acc", "best_epoch", "time_to_target", "micro_batch", "accum_steps", "world_size"}
    assert set(dataclasses.asdict(Progress())) == keys
    saved = {**dataclasses.asdict(Progress(epoch=3, step=90, best_test_acc=0.9)), "from_a_newer_version": 1}
    assert Progress.from_dict(saved) == Progress(epoch=3, step=90, best_test_acc=0.9)


@pytest.mark.realdata
@pytest.mark.parametrize("has_kernels", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_runs_fp32_and_says_so(monkeypatch, has_kernels):
    monkeypatch.setattr(runtime, "cpu_has_bf16_kernels", lambda: has_kernels)
    assert runtime.autocast_precision("bf16", torch.device("cpu"))[0] == ("bf16" if has_kernels else "fp32")
    assert runtime.autocast_precision("fp32", torch.device("cpu")) == ("fp32", None)
    assert runtime.autocast_precision("bf16", torch.device("cuda")) == ("bf16", None)
    with torch_settings(threads=1):
        run = build(resolve_config(**TINY))
    assert run.step.autocast_dtype == (torch.bfloat16 if has_kernels else None)
    assert any("no bf16 convolution kernels" in m for m in run.messages) != has_kernels
