"""`classicnets reproduce vgg`: the VGG paper's claims, re-checked at a scale a CPU can train."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from classicnets.experiments.vgg.paper import DEFAULT_GRID_RECIPE, GRID_RECIPES, GRID_ROWS
    from classicnets.experiments.vgg.settings import DEFAULT_JOBS, GridSettings

    parser = subparsers.add_parser("reproduce", help="re-check a paper's claims at small scale (vgg)")
    sub = parser.add_subparsers(dest="paper", metavar="PAPER", parser_class=type(parser))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    defaults = GridSettings()
    p = sub.add_parser(
        "vgg", help="train A, A-LRN, B, C, D, E (+ D jittered, D warm-started) and test the paper's claims",
        description="Train the VGG paper's configurations with one recipe and several seeds, test each "
                    "with single-scale, multi-scale, multi-crop and dense protocols, and write "
                    "OUT/report.md, report.json and errors.png: errors beside the paper's Tables 3-5 and, "
                    "per claim, whether it holds at this scale. Re-run the same command to resume: finished "
                    "runs are skipped.")
    p.add_argument("--data", default=defaults.data, metavar="NAME",
                   help="data set: fashion-mnist, mnist, cifar10, cifar100 or folder:PATH "
                        f"(default: {defaults.data})")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the data files are (default: system dirs, then download)")
    p.add_argument("--width", type=float, default=defaults.width, metavar="X",
                   help=f"channel width multiplier of every net (default: {defaults.width:g})")
    p.add_argument("--size", type=int, default=defaults.size, metavar="N",
                   help=f"training crop size; the train and test scales follow the paper's ratios to it "
                        f"(default: {defaults.size})")
    p.add_argument("--epochs", type=int, default=defaults.epochs, metavar="N",
                   help=f"epochs per run (default: {defaults.epochs})")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="seeds per configuration: 0..N-1 (default: 3)")
    p.add_argument("--out", default="runs/reproduce-vgg", metavar="DIR",
                   help="where the runs and the report go (default: runs/reproduce-vgg)")
    p.add_argument("--limit-train", type=_limit, default=defaults.limit_train, metavar="N|none",
                   help=f"train on the first N training images (default: {_all(defaults.limit_train)})")
    p.add_argument("--limit-test", type=_limit, default=defaults.limit_test, metavar="N|none",
                   help=f"test on the first N test images (default: {_all(defaults.limit_test)})")
    p.add_argument("--recipe", choices=list(GRID_RECIPES), default=DEFAULT_GRID_RECIPE,
                   help="training recipe of every run: small = the paper's, made to learn in a few epochs "
                        "(He init, lr 0.02, batch 64, warm-up + cosine); paper = the trainer's paper recipe "
                        f"(default: {DEFAULT_GRID_RECIPE})")
    p.add_argument("--bn", action="store_true",
                   help="use the _bn variants (batch norm: not the paper's nets)")
    p.add_argument("--grid", type=int, default=defaults.grid, metavar="N",
                   help="multi-crop: an NxN grid of crops (and flips) per test scale "
                        f"(default: {defaults.grid}; the paper: 5)")
    p.add_argument("--threads", type=_threads, default=1, metavar="N|all",
                   help="CPU threads for training and testing (default: 1, robust on a shared CPU: two "
                        "threads ran 10x slower than one here while another process used a core; 'all': "
                        "every core)")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help="runs trained at once, each in its own process with --threads threads "
                        f"(default: {DEFAULT_JOBS}: both cores of a 2-core CPU)")
    p.add_argument("--set", dest="train_options", action="append", default=[], metavar="KEY=VALUE",
                   help="any other `classicnets train` setting for every run, e.g. --set device=cuda "
                        "--set precision=bf16 --set progress=lines (repeatable)")
    p.add_argument("--configs", metavar="LIST",
                   help=f"only these rows, comma-separated, of {','.join(GRID_ROWS)} (warm-start sources are "
                        "added)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the runs finished so far")
    p.set_defaults(func=_vgg)


def _all(limit: int | None) -> str:
    return "none, all of them" if limit is None else str(limit)


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'none'; got {text!r}") from None


def _threads(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads or 'all'; got {text!r}")
    return value


def _vgg(args: argparse.Namespace) -> int:
    from classicnets.experiments.vgg import parse_train_options, reproduce_vgg

    result = reproduce_vgg(
        args.out, seeds=args.seeds, data_dir=args.data_dir, threads=args.threads, jobs=args.jobs,
        report_only=args.report_only,
        configs=[k.strip() for k in args.configs.split(",") if k.strip()] if args.configs else None,
        data=args.data, width=args.width, size=args.size, epochs=args.epochs, limit_train=args.limit_train,
        limit_test=args.limit_test, recipe=args.recipe, bn=args.bn, grid=args.grid,
        train_options=parse_train_options(args.train_options),
    )
    return 130 if result.stopped == "interrupted" else 0
