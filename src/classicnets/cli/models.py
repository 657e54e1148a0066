"""`classicnets list` and `classicnets summary`: which nets there are, and what is inside one.

`summary` builds the net on PyTorch's meta device: shapes flow through the layers but nothing is
computed or allocated, so VGG-16 at 224x224 is inspected in well under a second on any machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from classicnets.errors import ClassicNetsError

FORMATS = ("table", "json")


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="the nets, with their parameter counts in the ImageNet setting",
                              description="Every registered net with its parameter count in the ImageNet "
                                          "setting (3x224x224 input, 1000 classes), smallest input and paper.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="only names matching these shell patterns, e.g. 'vgg1*' (quote them)")
    p.add_argument("--pretrained", action="store_true",
                   help="only the nets torchvision publishes ImageNet weights for")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json")
    p.set_defaults(func=_list)

    p = subparsers.add_parser(
        "summary", help="per layer: output shape, parameters, MACs, receptive field; then totals",
        description="Build MODEL for the given input and print per layer its output shape (CxHxW), "
                    "parameters, MACs (multiply-accumulates of convs and linear layers, per image) and "
                    "receptive field in input pixels (RF) with its jump (product of strides), then totals.",
    )
    p.add_argument("model", metavar="MODEL", help="a name from 'classicnets list', e.g. vgg16")
    p.add_argument("--input", metavar="CxHxW",
                   help="input channels x height x width, e.g. 1x224x224 (default: the net's own, e.g. "
                        "3x224x224 for vgg16, 1x28x28 for lenet); for HxW not square the net is built "
                        "for the smaller side and the larger passes through its adaptive average pool")
    p.add_argument("--width", type=float, metavar="X", help="channel multiplier, e.g. 0.25 (default 1.0)")
    p.add_argument("--fc-width", type=int, metavar="N",
                   help="units of VGG's/AlexNet's hidden FC layers (default 4096 x width; the tutorials: 4096)")
    p.add_argument("--ceil-mode", action="store_true",
                   help="VGG: max-pools round sizes up, so 1x28x28 passes all five (28-14-7-4-2-1)")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes (default: the net's, mostly 1000)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="collapse modules below this nesting level: 1 shows the model's direct children "
                        "(one row per GoogLeNet Inception block); default: every layer")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default) or json")
    p.set_defaults(func=_summary)


def _short_paper(paper: str) -> str:
    """'Simonyan & Zisserman 2014, Very Deep ...' -> 'Simonyan & Zisserman 2014';
    'Krizhevsky, Sutskever & Hinton 2012, ...' -> 'Krizhevsky et al. 2012'."""
    found = re.match(r"(.*?)\s*\b((?:19|20)\d\d)\b", paper)
    if not found:
        return paper
    authors, year = found.groups()
    if "," in authors:
        authors = authors.split(",", 1)[0] + " et al."
    return f"{authors} {year}"


def _list(args) -> int:
    from classicnets.models import list_models, model_info
    from classicnets.models.weights import imagenet_weights_info

    names = list_models(args.patterns, pretrained=args.pretrained)
    if not names:
        raise ClassicNetsError(f"no net matches {' '.join(args.patterns)}: 'classicnets list' shows them all")
    infos = [model_info(name) for name in names]
    if args.pretrained:  # the weights' own facts, read off torchvision's enums (nothing is downloaded)
        infos = [{**info, "imagenet_weights": imagenet_weights_info(info["name"], info["torchvision"])}
                 for info in infos]
    if args.format == "json":
        print(json.dumps([{k: v for k, v in info.items() if k != "options"} for info in infos], indent=2))
        return 0
    rows = [(info["name"], f"{info['imagenet_params']:,}", str(info["min_input_size"]), info["family"],
             info["torchvision"] or "-", _short_paper(info["paper"])) for info in infos]
    header = ("Name", "Params (ImageNet)", "Min input", "Family", "torchvision twin", "Paper")
    if args.pretrained:
        rows = [(*row, f"{info['imagenet_weights']['imagenet_top1']:.1f}%",
                 "yes" if info["imagenet_weights"]["cached"] else "no") for row, info in zip(rows, infos)]
        header = (*header, "ImageNet top-1", "In hub cache")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.rjust(w) if i in (1, 2) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
              .rstrip())
    print("Params are for 3x224x224 input and 1000 classes; 'classicnets summary NAME' shows the layers.")
    if args.pretrained:
        print("Top-1: torchvision's figure for its weights (224 crop of 256); a net not in the hub cache fetches "
              f"its file on first use ({Path(infos[0]['imagenet_weights']['file']).parent}).")
    return 0


def _summary(args) -> int:
    import torch

    from classicnets.errors import ClassicNetsError
    from classicnets.inspect import parse_input_size, summary
    from classicnets.models import create_model, min_input_size, model_info

    info = model_info(args.model)  # an unknown name fails here, with close names suggested
    name, options = info["name"], info["options"]
    if args.input is None:
        size = options.get("input_size", 224)
        channels, height, width = options.get("in_channels", 3), size, size
    else:
        channels, height, width = parse_input_size(args.input)
    pools = {"ceil_mode": True} if args.ceil_mode else {}  # refused by name for a net without the option
    smallest = min_input_size(name, **pools)
    if min(height, width) < smallest:
        fix = " or --ceil-mode" if "ceil_mode" in options else ""
        raise ClassicNetsError(f"{name} needs inputs of at least {smallest}x{smallest}; got --input "
                               f"{channels}x{height}x{width}: pass --input {channels}x{smallest}x{smallest} or "
                               f"larger{fix}")
    if args.depth is not None and args.depth < 1:
        raise ClassicNetsError(f"--depth must be 1 or more (1 = the model's direct children); got {args.depth}")

    kwargs = {"in_channels": channels, "input_size": min(height, width), **pools}
    if args.width is not None:
        kwargs["width"] = args.width
    if args.fc_width is not None:
        kwargs["fc_width"] = args.fc_width
    if args.classes is not None:
        kwargs["num_classes"] = args.classes

    def inspect_on(device: str):
        with torch.device(device):
            model = create_model(name, **kwargs)
        return summary(model, (channels, height, width), device=device, depth=args.depth)

    try:
        result = inspect_on("meta")
    except NotImplementedError:  # some layer has no meta kernel: do it for real (slower, same table)
        result = inspect_on("cpu")
    if height != width:
        result.notes.append(f"built for {kwargs['input_size']}x{kwargs['input_size']} (the nets are square); "
                            f"the larger side passes through the adaptive average pool")
    if args.format == "json":
        print(result.to_json())
    else:
        _print_text(str(result))
    return 0


def _print_text(text: str) -> None:
    """Print, falling back to 'x' for '×' on a terminal whose encoding lacks it."""
    import sys

    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = text.replace("×", "x")
    print(text)
