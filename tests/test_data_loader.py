"""TensorLoader: epoch permutations, drop_last, DDP shard coverage, and exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from classicnets.data import ArrayDataset, EpochOrder, TensorLoader, transforms
from classicnets.errors import ClassicNetsError


def toy(n=50, side=8, channels=1) -> ArrayDataset:
    """Image i is filled with the value i % 256 and labelled i, so a batch tells which samples it holds."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, channels, side, side).clone()
    return ArrayDataset(images, torch.arange(n), [str(i) for i in range(n)], "toy", "train")


def epoch_labels(loader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


def flat(lists) -> list[int]:
    return [i for part in lists for i in part]


def test_an_epoch_visits_every_sample_once_with_a_partial_last_batch():
    loader = TensorLoader(toy(50), 16, seed=1)
    batches = epoch_labels(loader)
    assert len(loader) == 4 and [len(b) for b in batches] == [16, 16, 16, 2]
    assert sorted(flat(batches)) == list(range(50))
    assert flat(batches) != list(range(50)), "shuffled"


def test_drop_last_keeps_only_full_batches():
    loader = TensorLoader(toy(50), 16, drop_last=True)
    batches = epoch_labels(loader)
    assert len(loader) == 3 and all(len(b) == 16 for b in batches) and len(set(flat(batches))) == 48


def test_the_permutation_depends_on_seed_and_epoch_only():
    a, b = TensorLoader(toy(), 10, seed=5), TensorLoader(toy(), 10, seed=5)
    first = epoch_labels(a)
    assert first == epoch_labels(b)
    second = epoch_labels(a)  # iterating again moves on to the next epoch
    assert second != first and a.epoch == 2
    c = TensorLoader(toy(), 10, seed=5)
    c.set_epoch(1)
    assert epoch_labels(c) == second
    assert epoch_labels(TensorLoader(toy(), 10, seed=6)) != first
    assert epoch_labels(TensorLoader(toy(), 10, shuffle=False))[0] == list(range(10))


def test_without_a_transform_batches_are_float_in_unit_range():
    x, _ = next(iter(TensorLoader(toy(10), 10, shuffle=False)))
    assert x.dtype == torch.float32 and torch.allclose(x[:, 0, 0, 0], torch.arange(10) / 255)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 120), batch_size=st.integers(1, 9), world=st.integers(1, 5), drop_last=st.booleans(),
)
def test_ranks_cover_every_sample_exactly_once_and_run_the_same_number_of_steps(
    n, batch_size, world, drop_last
):
    if n < world or (drop_last and n < batch_size * world):
        with pytest.raises(ClassicNetsError):
            EpochOrder(n, batch_size, shuffle=True, drop_last=drop_last, seed=0, rank=0, world_size=world)
        return
    orders = [EpochOrder(n, batch_size, shuffle=True, drop_last=drop_last, seed=3, rank=r, world_size=world)
              for r in range(world)]
    perm = orders[0].permutation(2).tolist()
    steps = {len(range(o.num_batches)) for o in orders}
    assert len(steps) == 1, "every rank runs the same number of steps"
    seen = []
    for o in orders:
        for b in range(o.num_batches):
            start, end = o.bounds(b)
            assert end > start, "no rank ever gets an empty batch"
            assert end - start <= batch_size + world - 1
            if drop_last:
                assert end - start == batch_size
            seen += perm[start:end]
    if drop_last:
        assert len(seen) == len(set(seen)) == (n // (batch_size * world)) * batch_size * world
    else:
        assert sorted(seen) == list(range(n)), "exactly once: no padding, no duplicates, nothing lost"


def test_the_ranks_of_a_step_together_see_one_big_batch():
    # 51 = 4 x 12 + 3: the last global batch still gives each of the 3 ranks a sample.
    single = epoch_labels(TensorLoader(toy(51), 12, seed=9))
    ranks = [epoch_labels(TensorLoader(toy(51), 4, seed=9, rank=r, world_size=3)) for r in range(3)]
    assert len(single) == len(ranks[0]) == 5
    for step, whole in enumerate(single):
        assert flat(ranks[r][step] for r in range(3)) == whole


def test_a_remainder_too_small_for_every_rank_joins_the_previous_batch():
    loaders = [TensorLoader(toy(25), 3, world_size=4, rank=r) for r in range(4)]
    assert {len(loader) for loader in loaders} == {2}
    sizes = [[len(b) for b in epoch_labels(loader)] for loader in loaders]
    assert sizes == [[3, 3], [3, 3], [3, 3], [3, 4]]


def augmenting(size=8):
    return transforms.train_transform(size, crop_padding=2, flip=True, mean=[0.5], std=[0.5])


def test_resuming_mid_epoch_gives_exactly_the_remaining_batches():
    data = toy(60, side=8)
    uninterrupted = TensorLoader(data, 7, seed=11, transform=augmenting())
    uninterrupted.set_epoch(3)
    expected = list(uninterrupted)

    first = TensorLoader(data, 7, seed=11, transform=augmenting())
    first.set_epoch(3)
    iterator = iter(first)
    for _ in range(4):
        next(iterator)
    state = first.state_dict()
    assert state["epoch"] == 3 and state["batch"] == 4

    resumed = TensorLoader(data, 7, seed=11, transform=augmenting())
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a trainer calling set_epoch for the epoch it resumes does not restart it
    rest = list(resumed)
    assert len(rest) == len(expected) - 4
    for (x, y), (ex, ey) in zip(rest, expected[4:], strict=True):
        assert torch.equal(y, ey) and torch.equal(x, ex), "same samples and the same crops and flips"
    assert resumed.state_dict()["epoch"] == 4 and resumed.state_dict()["batch"] == 0


def test_augmentations_differ_between_batches_epochs_and_ranks():
    data = toy(16, side=8)
    data.images.copy_(torch.randint(0, 256, data.images.shape, dtype=torch.uint8))
    loader = TensorLoader(data, 16, shuffle=False, transform=augmenting())
    a = next(iter(loader))[0]
    loader.set_epoch(1)
    b = next(iter(loader))[0]
    assert not torch.equal(a, b)
    seeds = {EpochOrder(16, 8, shuffle=True, drop_last=False, seed=0, rank=r, world_size=2).batch_seed(0, 0)
             for r in range(2)}
    assert len(seeds) == 2


def test_a_saved_position_only_loads_into_a_matching_loader():
    state = TensorLoader(toy(50), 10, seed=1).state_dict()
    with pytest.raises(ClassicNetsError, match="global_batch_size=10 but now has global_batch_size=20"):
        TensorLoader(toy(50), 10, seed=1, world_size=2).load_state_dict(state)
    with pytest.raises(ClassicNetsError, match="seed=1 but now has seed=2"):
        TensorLoader(toy(50), 10, seed=2).load_state_dict(state)
    TensorLoader(toy(50), 5, seed=1, world_size=2).load_state_dict(state)  # same global batch: fine


def test_too_little_data_for_the_batch_or_the_ranks_is_a_clear_error():
    with pytest.raises(ClassicNetsError, match="3 samples cannot feed 4 ranks"):
        TensorLoader(toy(3), 1, world_size=4)
    with pytest.raises(ClassicNetsError, match="no full batch of 64 x 1 rank"):
        TensorLoader(toy(50), 64, drop_last=True)


def test_batches_arrive_on_the_loader_device():
    loader = TensorLoader(toy(8), 4, device="cpu", transform=augmenting())
    x, y = next(iter(loader))
    assert x.device.type == "cpu" and y.device.type == "cpu" and x.dtype == torch.float32
