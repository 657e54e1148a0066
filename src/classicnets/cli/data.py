"""`classicnets data list|info|get`: where the data sets are, what they hold, and fetching them."""

from __future__ import annotations

import argparse

from classicnets.errors import ClassicNetsError

DATA_NAMES = "fashion-mnist, mnist, cifar10, cifar100 or folder:PATH"  # tests keep it equal to data.DATASETS


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="list, inspect and fetch data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", metavar="DIR",
                       help="your data dir (default: $CLASSICNETS_DATA or ~/.cache/classicnets)")

    p = sub.add_parser("list", help="the known data sets and where each is found")
    add_common(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("info", help="counts, classes, per-channel mean/std, source and checksum of NAME",
                       description=f"NAME: {DATA_NAMES}")
    p.add_argument("name", metavar="NAME", help=f"the data set: {DATA_NAMES}")
    add_common(p)
    p.add_argument("--no-verify", action="store_true", help="skip the checksums (structure is still checked)")
    p.add_argument("--image-size", type=int, metavar="N", help="folders: rescale + centre-crop images to NxN")
    p.add_argument("--skip-bad", action="store_true", help="folders: skip unreadable images (and count them)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="folders without val/: fraction of each class held out as val (default 0.1)")
    p.set_defaults(func=_info)

    p = sub.add_parser("get", help="download NAME from its official mirrors (or say where it already is)")
    p.add_argument("name", metavar="NAME", help=f"the data set: {DATA_NAMES}")
    add_common(p)
    p.set_defaults(func=_get)


def _fmt(values) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _list(args) -> int:
    from classicnets.data import sources
    from classicnets.data.dataset import printable

    for name, spec in sources.DATASETS.items():
        found = sources.locate(spec, args.data_dir)
        where = f"not found: classicnets data get {name}"
        if found:
            where = f"{printable(found.path)} ({found.kind})"
        print(f"{name:14s} {spec.title:48s} {where}")
    print(f"{'folder:PATH':14s} {'an image folder, one subfolder per class':48s} (yours)")
    return 0


def _info(args) -> int:
    from classicnets import data
    from classicnets.data.dataset import printable

    if data.is_folder(args.name):
        return _folder_info(args)
    spec = data.get_spec(args.name)
    splits = {s: data.load(spec.name, s, args.data_dir, download=False, verify=not args.no_verify)
              for s in spec.splits}
    first = next(iter(splits.values()))
    location = data.locate(spec, args.data_dir)
    package = f", Debian package {spec.debian_package}" if spec.debian_package else ""
    kinds = {"system": "system dir" + package, "user": "your data dir"}
    kind = kinds.get(location.kind if location else "", "")
    print(f"{spec.name}: {spec.title}")
    print(f"  source    {printable(first.source)} ({kind})")
    checks = {ds.checksum for ds in splits.values()}
    if checks == {"ok"}:
        print(f"  checksum  ok ({spec.verified_by})")
    else:
        for s, ds in splits.items():
            print(f"  checksum  {s}: {ds.checksum}")
    for s, ds in splits.items():
        _print_split(s, ds)
    _print_classes(first.classes, None)
    return 0


def _print_split(split: str, ds) -> None:
    c, (h, w) = ds.in_channels, ds.image_size
    mean, std = ds.stats()
    print(f"  {split:9s} {len(ds)} images {c}x{h}x{w} uint8; per-channel mean {_fmt(mean)}  std {_fmt(std)}")


def _print_classes(classes, counts) -> None:
    from classicnets.data.dataset import printable

    shown = [f"{i} {printable(n)}" + (f" ({counts[i]})" if counts else "") for i, n in enumerate(classes)]
    if len(shown) > 20:
        shown = shown[:20] + [f"... {len(shown) - 20} more"]
    print(f"  classes   {len(classes)}: " + ", ".join(shown))


def _folder_info(args) -> int:
    from classicnets import data
    from classicnets.data.dataset import printable

    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = data.load(args.name, split, image_size=args.image_size, skip_bad=args.skip_bad,
                                      val_fraction=args.val_fraction, in_memory=False)
        except ClassicNetsError:
            if split == "train":
                raise
    first = splits["train"]
    print(f"{printable(first.name)}: image folder")
    print(f"  source    {printable(first.source)}")
    print(f"  checksum  {first.checksum}")
    for split, ds in splits.items():
        _print_split(split, ds)
    _print_classes(first.classes, first.class_counts())
    notes = dict.fromkeys(n for ds in splits.values() for n in ds.notes)
    for note in notes:
        print(f"  note      {note}")
    return 0


def _get(args) -> int:
    from classicnets import data
    from classicnets.data.dataset import printable

    if data.is_folder(args.name):
        print(f"{printable(args.name)}: an image folder is already local; nothing to download")
        return 0
    spec = data.get_spec(args.name)
    before = data.locate(spec, args.data_dir)
    location = data.fetch(spec.name, args.data_dir)
    checks = {data.load(spec.name, s, args.data_dir, download=False).checksum for s in spec.splits}
    state = "checksum ok" if checks == {"ok"} else "; ".join(sorted(checks))
    verb = "already present in" if before is not None and before.path == location.path else "downloaded to"
    print(f"{spec.name}: {verb} {printable(location.path)} ({state})")
    return 0
