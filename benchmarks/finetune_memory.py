"""Peak memory of fine-tuning from ImageNet weights on a CPU: the finetune recipe under --max-memory.

Runs the real `classicnets train --recipe finetune` path in this process (weights read through torch's hub
cache, the image folder loaded, auto batch probed under the budget, optimizer steps) and prints the
process's peak resident memory (VmHWM: everything, Python and torch included), the micro-batch x
accumulation plan auto batch chose, and seconds per optimizer step.

No network: unless --hub-dir names a cache holding the real file, a randomly initialised torchvision-format
state dict is written under the weights enum's own file name in a temporary TORCH_HOME (the values do not
change the memory), and the image folder is random RGB photos-sized images (--image-size, default 256).

    .venv/bin/python benchmarks/finetune_memory.py                       # VGG-16, 224, batch 32, 8GiB: ~3 min
    .venv/bin/python benchmarks/finetune_memory.py --activation-checkpointing --max-memory 4GiB
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def seed_hub_cache(model: str, home: Path) -> Path:
    """A random torchvision-format state dict under the enum's file name in `home`'s hub cache."""
    import torchvision.models as tvm

    from classicnets.models import model_info
    from classicnets.models.weights import hub_file, torchvision_weights

    twin = model_info(model)["torchvision"]
    spec = torchvision_weights(model, twin, "imagenet")
    os.environ["TORCH_HOME"] = str(home)
    path = hub_file(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = tvm.GoogLeNet(aux_logits=True, init_weights=True) if twin == "googlenet" else tvm.get_model(twin)
    torch.save(net.state_dict(), path)
    return path


def write_folder(root: Path, images: int, classes: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size * 4 // 3, 3), dtype=np.uint8)  # 4:3 like a photo
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-memory", default="8GiB")
    parser.add_argument("--images", type=int, default=72, help="training images (10%% more are held out)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--hub-dir", help="a TORCH_HOME whose hub cache holds the real weights file")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from classicnets import train
    from classicnets.training import memory

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.hub_dir:
            os.environ["TORCH_HOME"] = args.hub_dir
        else:
            print(f"seeded {seed_hub_cache(args.model, tmp / 'torch')} (random values, torchvision's layout)")
        write_folder(tmp / "data", args.images, 4, args.image_size)
        memory.reset_peak(torch.device("cpu"))
        start = time.perf_counter()
        result = train(recipe="finetune", model=args.model, data=f"folder:{tmp / 'data'}",
                       batch_size=args.batch_size, max_memory=args.max_memory, epochs=1, progress="none",
                       plots=False, tensorboard="off", run_dir=str(tmp / "run"), threads=args.threads,
                       activation_checkpointing=args.activation_checkpointing)
        elapsed = time.perf_counter() - start
        peak = memory.process_peak_rss()
    epoch = result.history[-1] if result.history else {}
    print(f"date {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    print(f"{args.model} finetune at 224, batch {args.batch_size}, --max-memory {args.max_memory}"
          f"{', activation checkpointing' if args.activation_checkpointing else ''}: "
          f"peak RSS {memory.format_bytes(peak)} (whole process), {elapsed:.0f} s for the run "
          f"(the epoch: {epoch.get('train_seconds', float('nan')):.0f} s training, {epoch.get('examples_per_sec', float('nan')):.1f} img/s)")


if __name__ == "__main__":
    main()
