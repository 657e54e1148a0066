"""`classicnets train` and `classicnets plot`.

The train options are generated from `TrainConfig`'s fields, so a flag, a TOML key and a Python
keyword are always the same setting. Only flags given on the command line override the recipe and
the --config file (argparse.SUPPRESS keeps the others out of the namespace).
"""

from __future__ import annotations

import argparse
import re

_GROUPS = {
    "what": "what to train", "model": "model shape", "optim": "optimisation", "data": "data and augmentation",
    "speed": "speed and memory", "repro": "reproducibility", "run": "run control and output",
}


def register(subparsers) -> None:
    from classicnets.training.config import DEFAULT_RECIPE, FIELDS, RECIPES, base_type, resolve_config

    defaults = resolve_config({})
    p = subparsers.add_parser(
        "train", help="train a net (default: the fast recipe on Fashion-MNIST)",
        description="Train a net. Settings come, lowest first, from the defaults, the recipe, a --config "
                    "TOML file and the flags given here. Recipes: " + "; ".join(
                        f"{name} ({_recipe_summary(values)})" for name, values in RECIPES.items() if values),
    )
    p.add_argument("--config", metavar="FILE", help="TOML file of settings (flat keys named like the flags)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    groups = {key: p.add_argument_group(title) for key, title in _GROUPS.items()}
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        choices = f.metadata.get("choices")
        text = f.metadata["help"]
        if default is not None or "(default:" not in text:  # else the help says what none means
            by_recipe = f", {DEFAULT_RECIPE} recipe" if name in RECIPES[DEFAULT_RECIPE] else ""
            text = re.sub(r" \(default: [^)]*\)", "", text) + f" (default: {_show(default)}{by_recipe})"
        text = with_meanings(text, choices)
        kwargs = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        if base_type(name) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _converter(name)
            kwargs["metavar"] = "{" + ",".join(choices) + "}" if choices else _metavar(name)
        if name == "recipe":
            kwargs.update(choices=list(RECIPES), metavar="{" + ",".join(RECIPES) + "}",
                          help=f"named preset the other settings start from (default: {DEFAULT_RECIPE})")
        groups[f.metadata["group"]].add_argument(flag, **kwargs)
    p.set_defaults(func=_train)

    q = subparsers.add_parser("plot", help="redraw a run's plots, or overlay several runs",
                              description="Draw loss and accuracy curves from runs' metrics.jsonl. One run: "
                                          "its loss.png, accuracy.png and confusion.png again; several: one "
                                          "overlay.")
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run dir (or its metrics.jsonl)")
    q.add_argument("--out", metavar="FILE", help="overlay image to write, .png, .pdf or .svg (default for "
                                                 "several runs: comparison.png)")
    q.set_defaults(func=_plot)


def with_meanings(text: str, choices: dict[str, str] | tuple[str, ...] | None) -> str:
    """A help text with what each choice means ("head: fc (...), gap (...) (default: ...)"), written from
    the same literal the values are checked against, so --help never names a value the code refuses."""
    if not isinstance(choices, dict):
        return text  # the metavar {a,b,c} already lists them
    listed = ", ".join(f"{value} ({meaning})" if meaning else value for value, meaning in choices.items())
    prose, default = re.match(r"(.*?)((?: \(default: [^)]*\))?)$", text).groups()
    return f"{prose}: {listed}{default}"


_METAVARS = {"model": "NAME", "data": "NAME", "name": "NAME", "data_dir": "DIR", "run_dir": "DIR",
             "warm_start": "CHECKPOINT", "scale_jitter": "SMIN,SMAX", "max_memory": "SIZE",
             "batch_size": "N|auto", "device": "DEVICE"}


def _metavar(name: str) -> str:
    from classicnets.training.config import base_type

    return _METAVARS.get(name) or {int: "N", float: "X"}.get(base_type(name), "VALUE")


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _recipe_summary(values: dict) -> str:
    keys = ("model", "width", "size", "epochs", "batch_size", "lr", "schedule", "precision")
    return ", ".join(f"{k} {values[k]}" for k in keys if k in values)


def _converter(name: str):
    def convert_text(text: str):
        from classicnets.errors import ClassicNetsError
        from classicnets.training.config import convert

        try:
            return convert(name, text)
        except ClassicNetsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert_text.__name__ = name  # argparse names the type in its messages
    return convert_text


def _train(args: argparse.Namespace) -> int:
    from classicnets.training import resolve_config, train
    from classicnets.training.config import FIELDS, load_toml, to_toml

    explicit = {k: v for k, v in vars(args).items() if k in FIELDS}
    if args.resume:
        if args.config:
            explicit = {**load_toml(args.config), **explicit}
        result = train(resume=args.resume, **explicit)
    else:
        config = resolve_config(explicit, config_file=args.config)
        if args.print_config:
            print(to_toml(config), end="")
            return 0
        result = train(config)
    return 130 if result.stopped == "interrupted" else 0


def _plot(args: argparse.Namespace) -> int:
    from classicnets.plots import plot_run, plot_runs

    if len(args.run_dirs) == 1 and not args.out:
        written = plot_run(args.run_dirs[0])
    else:
        written = [plot_runs(args.run_dirs, args.out or "comparison.png")]
    for path in written:
        print(path)
    return 0
