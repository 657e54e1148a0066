"""The tutorials' way, the baseline `classicnets bench` compares with: d2l's `train_ch6` loop fed by a torch
DataLoader with 2 workers that turns each image into a PIL image and runs torchvision's `Resize` +
`ToTensor` on it, as `torchvision.datasets.FashionMNIST` does; fp32, NCHW, plain SGD, Xavier init, the net
without batch norm (d2l's VGG has none)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from classicnets.bench.timing import macs_per_image, warm_up
from classicnets.models import create_model, list_models
from classicnets.training import memory

TUTORIAL_WORKERS = 2  # d2l's load_data_fashion_mnist
TUTORIAL_LR = 0.05  # d2l's VGG-11 on Fashion-MNIST (the `d2l` recipe)


class PILImages(torch.utils.data.Dataset):
    """uint8 images handed out one at a time as PIL images through a torchvision transform, as
    `torchvision.datasets.FashionMNIST` (and so d2l's `load_data_fashion_mnist`) does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable, channels: int):
        self.images, self.labels, self.transform, self.channels = images, labels, transform, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        pixels = self.images[i]
        array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
        image = Image.fromarray(array)
        if self.channels == 3 and image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image), int(self.labels[i])


def tutorial_model_name(name: str) -> str:
    """The net the tutorials train: ours without batch norm where that variant exists (d2l's VGG has none)."""
    plain = name.removesuffix("_bn")
    return plain if plain != name and plain in list_models() else name


class TutorialLoop:
    """The tutorials' training loop (d2l `train_ch6`) on the same threads and device, as an endless
    iterator of steps (`steps`), warmed up and with its peak memory measured on construction."""

    def __init__(self, train_set, s, device: torch.device):
        self.name, self.device = tutorial_model_name(s.model), device
        torch.manual_seed(0)
        self.net = create_model(self.name, num_classes=len(train_set.classes), in_channels=s.channels,
                                input_size=s.size, width=s.width, init="xavier",
                                **({"fc_width": s.fc_width} if s.fc_width else {})).to(device)
        self.macs = macs_per_image(self.net, (s.channels, s.size, s.size))
        per_image = transforms.Compose([transforms.Resize(s.size), transforms.ToTensor()])
        dataset = PILImages(train_set.images, train_set.labels, per_image, s.channels)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch, shuffle=True,
                                                  num_workers=TUTORIAL_WORKERS)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=TUTORIAL_LR)
        memory.reset_peak(device)
        base = memory.process_rss() if device.type != "cuda" else 0
        self.steps = self._steps()
        warm_up(self.steps, s.warmup, device)
        self.peak_memory = memory.peak(device) - base

    def _steps(self) -> Iterator[int]:
        loss_fn = torch.nn.CrossEntropyLoss()
        self.net.train()
        while True:
            for x, y in self.loader:
                x, y = x.to(self.device), y.to(self.device)
                y_hat = self.net(x)
                loss = loss_fn(y_hat, y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                with torch.no_grad():  # d2l's Accumulator: the loss and accuracy as Python floats, every step
                    _ = loss.item() * len(y), float((y_hat.argmax(1) == y).sum())
                yield len(y)

    def close(self) -> None:
        self.steps.close()  # shuts the DataLoader's workers down

    def summary(self) -> dict[str, Any]:
        return {"model": self.name, "precision": "fp32", "channels_last": False, "workers": TUTORIAL_WORKERS,
                "lr": TUTORIAL_LR, "macs_per_image": self.macs, "peak_memory_bytes": int(self.peak_memory)}

