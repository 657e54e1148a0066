"""How fast batches reach the net: our TensorLoader + batched transforms vs the tutorials' pipeline.

The tutorials (d2l `load_data_fashion_mnist(batch_size, resize=224)`) build
    torchvision.datasets.FashionMNIST(transform=Compose([Resize(S), ToTensor()]))
in a DataLoader with worker processes: every image becomes a PIL image, is resized alone, turned into
a tensor, then copied between processes. Ours keeps the 60000×1×28×28 uint8 set as one tensor and
transforms whole batches. Both run here, in one run, on the real Fashion-MNIST (Debian's
dataset-fashion-mnist), batch 128. Reported per size:
  * delivery: images/s each pipeline hands out on its own (ours in-process, theirs with 2 workers);
  * CPU cost: CPU-milliseconds per batch on one thread (theirs: the same work done in-process);
  * share of a training step: our batch time against one VGG-11 width-1/4 fp32 SGD step;
  * at 32x32 also end to end: images/s of training (the "fast" recipe's VGG-11-BN width 1/4, bf16,
    channels_last) fed by each pipeline, where the tutorials' workers compete with it for the cores.

    .venv/bin/python benchmarks/bench_loader.py            # about 2-3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torchvision import datasets
from torchvision import transforms as tv

from classicnets import data
from classicnets.models import create_model
from classicnets.training.config import RECIPES
from classicnets.training.step import ClassificationLoss, TrainStep

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def one_core_ms(batches, limit: int) -> float:
    """CPU-milliseconds per batch with one thread in this process: the work itself, without the
    spin-waiting a second intra-op thread adds on a busy machine (DataLoader workers run 1 thread too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return timed(batches, limit)[1]
    finally:
        torch.set_num_threads(threads)


def timed(batches, limit: int, step=None) -> tuple[float, float]:
    """(images/s, CPU ms per batch of this process) over `limit` batches after one warm-up batch."""
    iterator = iter(batches)
    x, y = next(iterator)
    if step is not None:
        step(x, y)
    count, n, wall, cpu = 0, 0, time.perf_counter(), time.process_time()
    for x, y in iterator:
        if step is not None:
            step(x, y)
        count, n = count + len(x), n + 1
        if n >= limit:
            break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1000 * cpu / n


def our_loader(train, size: int, batch: int, augment: dict) -> data.TensorLoader:
    mean, std = train.stats()
    if augment.pop("mean_only", False):  # the VGG paper's preprocessing: mean subtraction only
        std = None
    tf = data.transforms.train_transform(size, mean=mean, std=std, **augment)
    return data.TensorLoader(train, batch, seed=0, transform=tf)


def tutorial_loader(raw_root: Path, size: int, batch: int, workers: int):
    pipeline = tv.Compose([tv.Resize(size), tv.ToTensor()])
    dataset = datasets.FashionMNIST(str(raw_root), train=True, transform=pipeline, download=False)
    return torch.utils.data.DataLoader(dataset, batch, shuffle=True, num_workers=workers)


def vgg11_quarter(size: int, name: str = "vgg11"):
    return create_model(name, num_classes=10, in_channels=1, input_size=size, width=0.25)


def sgd_step(model, bf16: bool = False):
    """The trainer's step (`TrainStep`) with plain SGD momentum 0.9 and cross-entropy: one call, one update."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    train_step = TrainStep(model, optimizer, ClassificationLoss(), autocast_dtype=torch.bfloat16 if bf16 else None)

    def step(x, y):
        train_step(x, y)
        train_step.update()

    return step


def step_seconds(model, size: int, batch: int, steps: int) -> float:
    """Best time of `steps` SGD steps (forward, backward, update) on random 1×size×size inputs."""
    step = sgd_step(model)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
    step(x, y)  # warm-up: allocator, kernels
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    return min(times)


def torchvision_layout(tmp: Path) -> Path:
    """torchvision's FashionMNIST reads the gunzipped files from <root>/FashionMNIST/raw."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SYSTEM_DIR.glob("*.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ours-batches", type=int, default=200, help="batches timed for our loader")
    parser.add_argument("--tutorial-batches-32", type=int, default=200)
    parser.add_argument("--tutorial-batches-224", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorials' loader")
    parser.add_argument("--steps", type=int, default=2, help="VGG-11 steps timed for the step time at 224")
    parser.add_argument("--train-steps-32", type=int, default=60, help="end-to-end training steps at 32")
    args = parser.parse_args()
    if not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"needs the real Fashion-MNIST in {SYSTEM_DIR}: install dataset-fashion-mnist")

    b = args.batch_size
    train = data.load("fashion-mnist", "train")
    print(f"Fashion-MNIST train: {len(train)} images from {train.source} (checksum {train.checksum}); "
          f"batch {b}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"tutorials: {args.workers} workers")
    cases = [
        (32, "resize 28->32, pad-4 random crop, flip, normalise", {"crop_padding": 4, "flip": True}),
        (224, "resize 28->224, flip, normalise", {"flip": True}),
        (224, "VGG scale jitter S in [256,512], crop 224, flip, mean subtraction",
         {"scale_jitter": (256, 512), "flip": True, "mean_only": True}),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        raw_root = torchvision_layout(Path(tmp))
        for size in (32, 224):
            limit = args.tutorial_batches_32 if size <= 32 else args.tutorial_batches_224
            theirs, _ = timed(tutorial_loader(raw_root, size, b, args.workers), limit)
            theirs_cpu = one_core_ms(tutorial_loader(raw_root, size, b, 0), max(10, limit // 4))
            model = vgg11_quarter(size)
            step = step_seconds(model, size, b, args.steps if size > 32 else 10) if model else None
            print(f"\n{size}x{size}  tutorials' Resize({size}) + ToTensor: {theirs:7.0f} images/s delivered, "
                  f"{theirs_cpu:6.1f} CPU-ms per batch on 1 core")
            for case_size, what, augment in cases:
                if case_size != size:
                    continue
                ours, _ = timed(our_loader(train, size, b, dict(augment)), args.ours_batches)
                cpu_batches = max(10, args.ours_batches // 4)
                ours_cpu = one_core_ms(our_loader(train, size, b, dict(augment)), cpu_batches)
                print(f"{size}x{size}  ours, {what}: {ours:7.0f} images/s delivered ({ours / theirs:.1f}x), "
                      f"{ours_cpu:6.1f} CPU-ms per batch ({theirs_cpu / ours_cpu:.1f}x less)")
                if step:
                    print(f"        {1000 * b / ours:.1f} ms per batch = {100 * b / ours / step:.2f}% of a "
                          f"VGG-11 w1/4 fp32 training step ({1000 * step:.0f} ms)")
            if size == 32 and model is not None and args.train_steps_32:
                # The "fast" recipe's net, where input speed matters most: VGG-11-BN w1/4, bf16, NHWC.
                fast = vgg11_quarter(32, "vgg11_bn").to(memory_format=torch.channels_last)
                ours_32 = our_loader(train, 32, b, {k: RECIPES["fast"][k] for k in ("crop_padding", "flip")})
                fed_ours, _ = timed(ours_32, args.train_steps_32, sgd_step(fast, bf16=True))
                theirs_32 = tutorial_loader(raw_root, 32, b, args.workers)
                fed_theirs, _ = timed(theirs_32, args.train_steps_32, sgd_step(fast, bf16=True))
                print(f"32x32  end to end, VGG-11-BN w1/4 bf16 channels_last training: fed by ours "
                      f"{fed_ours:.0f} images/s, by the tutorials' pipeline {fed_theirs:.0f} "
                      f"({fed_ours / fed_theirs:.2f}x)")


if __name__ == "__main__":
    main()
