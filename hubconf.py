"""torch.hub entry points: one per classicnets net.

    >>> net = torch.hub.load("PATH/TO/classicnets", "vgg16", source="local", num_classes=10)

(torch.hub.list and torch.hub.help take GitHub repositories only; for a local folder,
`classicnets list` shows the names.)

Each entry takes create_model's options (num_classes, in_channels / in_chans, width, input_size, ...,
features_only, pretrained=True / weights="imagenet": torchvision's ImageNet weights through torch's hub
cache). The package is imported from src/ beside this file when it is not installed.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision"]

_SRC = _Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in _sys.path:
    _sys.path.insert(0, str(_SRC))

from classicnets.models import registry as _registry


def _entry(name: str):
    def build(**kwargs):
        return _registry.create_model(name, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = _registry.get_entry(name).builder.__doc__
    return build


for _name in _registry.list_models():
    globals()[_name] = _entry(_name)
