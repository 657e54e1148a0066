"""`classicnets eval`, `classicnets predict` and `classicnets export`: using a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from classicnets.errors import ClassicNetsError

# classicnets.export.FORMATS, named here so that `classicnets --help` need not import torch (a test keeps
# the two equal).
EXPORT_FORMATS = ("onnx", "torchscript", "pt2", "safetensors")
EVAL_REPORT = "classicnets.eval/1"  # the "format" of eval --out's JSON: an earlier report may be replaced

MAX_PRINTED_CONFUSION = 20  # classes; a larger matrix goes to --out only
MAX_SCALE = 4096  # test scales above this would not fit in memory at any sensible batch size
# classicnets.evaluation.CROP_MODES and "none" (a test keeps them equal).
EVAL_CROPS = ("none", "center", "flip", "multi")
# classicnets.predict.READABLE: the image files predict reads (a test keeps the two equal).
IMAGE_FILES = "PNG, JPEG, GIF, WebP, BMP or TIFF"
# What train's --progress modes mean for eval's test pass (evaluation.PassProgress).
EVAL_PROGRESS = {"auto": "a bar when stderr is a terminal, else lines", "bar": "a tqdm bar",
                 "lines": "about ten lines with the rate and the time left", "none": "nothing"}


def register(subparsers) -> None:
    from classicnets.cli.train import with_meanings
    from classicnets.training.config import FIELDS, PROGRESS

    device_help = FIELDS["device"].metadata["help"] + " (default: %(default)s)"
    p = subparsers.add_parser(
        "eval", help="test a checkpoint with the VGG paper's protocols (top-1/top-5 error, confusion)",
        description="Evaluate a checkpoint (a .pt file or a run dir) on its test set. Protocols (Simonyan & "
                    "Zisserman, sec. 3.2, 4.2-4.3): each test scale Q rescales the short side to Q; the net "
                    "sees a centre crop, the crop and its flip, or a 5x5 grid of crops with flips (multi); "
                    "--dense applies the fully convolutional net to the whole image. Soft-max posteriors "
                    "are averaged over views, scales and kinds.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?",
                   help="a classicnets checkpoint or a run dir (its last.pt); or pass --model and --weights")
    _add_weights_options(p)
    p.add_argument("--data", metavar="NAME",
                   help="data set (default: the one the checkpoint was trained on); with --weights imagenet, "
                        "folder:PATH of an ImageNet-style val folder (synset folders n01440764 ... map to "
                        "torchvision's class order)")
    p.add_argument("--data-dir", metavar="DIR", help=FIELDS["data_dir"].metadata["help"])
    p.add_argument("--split", metavar="SPLIT",
                   help="split to test (default: test; val for folder: data, all of a folder of class folders "
                        "with --weights)")
    p.add_argument("--scales", metavar="Q,Q,...", type=_int_list,
                   help="test scales: short side of the rescaled image (default: the checkpoint's test scale)")
    p.add_argument("--crops", choices=EVAL_CROPS,
                   help="crop views per scale (default: center, or flip for a checkpoint trained with "
                        "--test-flip; none with --dense)")
    p.add_argument("--dense", action="store_true",
                   help="apply the net's convolutional form to the whole image; with --crops, average both")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="dense evaluation also sees the mirrored image (default: on unless --crops center)")
    p.add_argument("--grid", type=int, default=5, metavar="N",
                   help="multi-crop grid per side (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N",
                   help="images per batch (default: %(default)s)")
    p.add_argument("--precision", choices=tuple(FIELDS["precision"].metadata["choices"]), default="fp32",
                   help="autocast precision (default: %(default)s; the fast recipe's test pass uses bf16)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC convolutions, 1.3-2x faster on a CPU (default: on)")
    p.add_argument("--limit", type=int, metavar="N", help="test only the first N images")
    p.add_argument("--device", default="auto", metavar="DEVICE", help=device_help)
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: all cores, one fewer while another program keeps them busy)")
    p.add_argument("--progress", choices=tuple(PROGRESS), default="auto",
                   help=with_meanings("progress of the test pass on stderr",
                                      {mode: EVAL_PROGRESS[mode] for mode in PROGRESS}) + " (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    p.add_argument("--out", metavar="FILE", help="also write the result as JSON to FILE")
    p.set_defaults(func=_eval)

    q = subparsers.add_parser("predict", help="print the most probable classes of image files",
                              description="Classify image files with a checkpoint: each is converted to the "
                                          "net's channels, rescaled, centre-cropped and normalised as in "
                                          "testing.")
    q.add_argument("inputs", nargs="+", metavar="CHECKPOINT IMAGE",
                   help=f"a classicnets checkpoint or run dir, then image files to classify ({IMAGE_FILES}); "
                        "with --model and --weights, image files only")
    _add_weights_options(q)
    q.add_argument("--topk", type=int, default=5, metavar="K",
                   help="classes to show per image (default: %(default)s)")
    q.add_argument("--device", default="auto", metavar="DEVICE", help=device_help)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=_predict)

    r = subparsers.add_parser("export", help="write a checkpoint as ONNX, TorchScript, .pt2 or safetensors",
                              description="Export a checkpoint for deployment. Class names, input size and "
                                          "normalisation travel inside the file as metadata. The batch is "
                                          "always free; the graph takes N x C x S x S at the training size S "
                                          "unless --dynamic-size (torchscript: any size). onnx needs the onnx and onnxscript packages "
                                          "(pip install -e '.[extras]'). torchscript is deprecated in recent "
                                          "torch; pt2 (torch.export) is its successor. safetensors holds the "
                                          "weights only.")
    r.add_argument("checkpoint", metavar="CHECKPOINT", help="a classicnets checkpoint or a run dir (its last.pt)")
    r.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt",
                   help="onnx (onnxruntime and most servers), torchscript, pt2 (torch.export) or safetensors "
                        "(weights only)")
    r.add_argument("--out", metavar="PATH", help="output file (default: beside the checkpoint, same stem)")
    r.add_argument("--dynamic-size", action="store_true",
                   help="onnx and pt2: height and width free from the net's smallest input size up; refused, "
                        "with the reason, for a net whose layers the exporter fixes at one size (GoogLeNet's "
                        "ceil-mode pools; for onnx, an FC head that pools to a grid larger than 1x1). "
                        "torchscript files are scripted and take any size the net takes, flag or not")
    r.add_argument("--include-normalize", action="store_true",
                   help="onnx, torchscript and pt2: the graph starts with (x - mean) / std, so it takes raw "
                        "0-1 pixels (the metadata says normalized_inside: true)")
    r.set_defaults(func=_export)


def _add_weights_options(parser) -> None:
    parser.add_argument("--model", metavar="NAME", help="with --weights: the net to build (see classicnets list "
                                                       "--pretrained)")
    parser.add_argument("--weights", metavar="imagenet|PATH",
                        help="use trained weights instead of a checkpoint: imagenet (torchvision's, through "
                             "torch's hub cache; classes named as ImageNet's) or a state dict / .safetensors file")


def _loaded_from_args(args, checkpoint: str | None, device):
    """The net to use: a checkpoint, or --model with --weights (one line when the combination is wrong)."""
    from classicnets.evaluation import load_inference_model, load_trained_weights

    if args.weights is None:
        if args.model is not None:
            raise ClassicNetsError("--model names the net to build for --weights; a checkpoint knows its net: "
                                   "drop --model, or pass --weights imagenet (or a file)")
        if checkpoint is None:
            raise ClassicNetsError("pass a CHECKPOINT (a .pt file or run dir), or --model NAME --weights imagenet")
        return load_inference_model(checkpoint, device)
    if checkpoint is not None:
        raise ClassicNetsError(f"pass a checkpoint ({checkpoint}) or --weights, not both")
    if args.model is None:
        raise ClassicNetsError("--weights needs the net to build: pass --model NAME (e.g. --model vgg16; "
                               "classicnets list --pretrained shows which nets have ImageNet weights)")
    return load_trained_weights(args.model, args.weights, device)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, like 32,40,48; got {text!r}")
    if not values or min(values) < 1 or max(values) > MAX_SCALE:
        raise argparse.ArgumentTypeError(f"expected integers in 1..{MAX_SCALE} like 32,40,48; got {text!r}")
    return values


def _device(text: str):
    import re

    import torch

    if text == "auto":
        return None
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise ClassicNetsError(f"--device must be auto, cpu, cuda or cuda:N; got {text!r}")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ClassicNetsError(f"--device {text}: no CUDA GPU is available here; use --device cpu")
    return text


# --- eval -----------------------------------------------------------------------------------------------

def _at_least_one(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ClassicNetsError(f"--{name.replace('_', '-')} must be 1 or more; got {value}")


def _eval(args) -> int:
    import dataclasses

    from classicnets import data
    from classicnets.evaluation import evaluate
    from classicnets.training import checkpoint, paths
    from classicnets.training.runtime import default_threads, torch_settings

    # Everything the user can get wrong is refused before the checkpoint and the data are loaded.
    _at_least_one(batch_size=args.batch_size, grid=args.grid, limit=args.limit, threads=args.threads)
    if args.weights is not None and not args.data:
        raise ClassicNetsError("--weights gives a net without its test data: pass --data NAME or folder:PATH "
                               "(for imagenet, an ImageNet-style val folder of synset folders n01440764 ...)")
    if args.out is not None:
        inputs = [checkpoint.input_file(args.checkpoint)] if args.checkpoint else []
        inputs += [Path(args.weights)] if args.weights and Path(args.weights).exists() else []
        paths.check_output(args.out, inputs, replaces=EVAL_REPORT.encode())
    loaded = _loaded_from_args(args, args.checkpoint, _device(args.device))
    name = args.data or loaded.data_name
    if not name:
        raise ClassicNetsError(f"{args.checkpoint} does not say which data set it was trained on: pass --data NAME")
    # A net trained elsewhere is tested on every image of a folder of class folders, not a held-out tenth.
    flat_folder = data.is_folder(name) and not (Path(name.split(":", 1)[1]).expanduser() / "train").is_dir()
    split = args.split or ("all" if args.weights is not None and flat_folder else data.test_split(name))
    dataset = data.load(name, split, root=args.data_dir)
    if args.limit is not None:
        dataset = dataclasses.replace(dataset, images=dataset.images[:args.limit],
                                      labels=dataset.labels[:args.limit])
    import torch

    crops = args.crops or ("none" if args.dense else "flip" if loaded.test_flip else "center")
    autocast = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    with torch_settings(threads=args.threads or default_threads()):
        result = evaluate(loaded, dataset, scales=args.scales, crops=crops, dense=args.dense, flip=args.flip,
                          grid=args.grid, batch_size=args.batch_size, autocast_dtype=autocast,
                          channels_last=args.channels_last, progress=args.progress,
                          adapt_threads=args.threads is None)
    report = {"format": EVAL_REPORT, "checkpoint": str(args.checkpoint or args.weights), "model": loaded.name,
              "data": name,
              "split": split,
              "precision": args.precision, **result.to_dict()}
    print(json.dumps(report, indent=2) if args.json else format_report(report))  # first: a failed write keeps it
    if args.out:
        text = json.dumps(report, indent=2) + "\n"
        checkpoint.atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        if not args.json:
            print(f"wrote {args.out}")
    return 0


def format_report(report: dict) -> str:
    """The text `classicnets eval` prints: errors, per-class accuracy, confusion matrix."""
    classes = report["classes"]
    lines = [
        f"{report['model']} on {report['data']} {report['split']} ({report['count']} images)",
        f"protocol: {report['protocol']}",
        f"top-1 error {100 * report['top1_error']:6.2f}%   (accuracy {100 * report['top1']:.2f}%)",
        f"top-5 error {100 * report['top5_error']:6.2f}%",
    ]
    # From the confusion rows (ImageNet's class names repeat: two "crane"s), only the classes with images.
    shown = [(c, row[i] / sum(row)) for i, (c, row) in enumerate(zip(classes, report["confusion"])) if sum(row)]
    empty = len(classes) - len(shown)
    lines.append("per-class accuracy" + (f" ({len(shown)} of {len(classes)} classes have images):" if empty else ":"))
    width = max((len(c) for c, _ in shown), default=0)
    lines += [f"  {c:<{width}}  {100 * acc:6.2f}%" for c, acc in shown]
    lines.append(format_confusion(report["confusion"], classes))
    return "\n".join(lines)


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    k = len(classes)
    if k > MAX_PRINTED_CONFUSION:
        return f"confusion matrix: {k}x{k}, too wide to print; pass --out FILE to get it as JSON"
    cell = max(len(str(k - 1)), *(len(str(v)) for row in confusion for v in row)) + 1
    label = max(len(c) for c in classes) + len(str(k - 1)) + 1
    lines = ["confusion matrix (rows: true class, columns: predicted class by number):",
             " " * (label + 2) + "".join(f"{j:>{cell}}" for j in range(k))]
    for i, (name, row) in enumerate(zip(classes, confusion)):
        lines.append(f"  {f'{i} {name}':<{label}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


# --- predict --------------------------------------------------------------------------------------------

def _predict(args) -> int:
    from classicnets.predict import predict

    checkpoint, images = (None, args.inputs) if args.weights is not None else (args.inputs[0], args.inputs[1:])
    if not images:
        raise ClassicNetsError(f"no images to classify: pass image files after the checkpoint {checkpoint}")
    loaded = _loaded_from_args(args, checkpoint, _device(args.device))
    predictions = predict(loaded, images, topk=args.topk)
    if args.json:
        print(json.dumps([{"image": p.source, "top": [{"class": c, "probability": v} for c, v in p.top]}
                          for p in predictions], indent=2))
        return 0
    for p in predictions:
        print(f"{p.source}:")
        for name, prob in p.top:
            print(f"  {100 * prob:6.2f}%  {name}")
    return 0


# --- export ---------------------------------------------------------------------------------------------

_HOW_TO_LOAD = {
    "onnx": "onnxruntime.InferenceSession(PATH); input 'images' N x C x H x W, output 'logits'",
    "torchscript": "torch.jit.load(PATH)",
    "pt2": "torch.export.load(PATH).module()",
    "safetensors": "classicnets.export.model_from_safetensors(PATH)",
}


def _export(args) -> int:
    from classicnets.export import export

    path = export(args.checkpoint, args.fmt, args.out, dynamic_size=args.dynamic_size,
                  include_normalize=args.include_normalize)
    size = path.stat().st_size
    notes = [f"{args.fmt}", f"{size / 2**20:.1f} MiB"]
    if args.dynamic_size:
        notes.append("height and width free")
    if args.fmt != "safetensors":
        notes.append("takes raw 0-1 pixels" if args.include_normalize else "normalise with its mean/std first")
    print(f"wrote {path} ({', '.join(notes)}); load it with {_HOW_TO_LOAD[args.fmt]}", file=sys.stdout)
    return 0
