"""--help tells the truth: every argument has a help text, and the values, examples and defaults it names
are the ones the code accepts (a new user was told `--head fc or conv`, and conv was refused)."""

from __future__ import annotations

import argparse
import re

import pytest

from classicnets.cli import build_parser, main
from classicnets.cli.evaluate import EVAL_CROPS, IMAGE_FILES
from classicnets.data import DATASETS
from classicnets.errors import ClassicNetsError
from classicnets.evaluation import CROP_MODES, PassProgress
from classicnets.models.init import SCHEMES
from classicnets.models.vgg import HEADS as VGG_HEADS
from classicnets.predict import READABLE
from classicnets.training.config import FIELDS, HEADS, INIT_SCHEMES, PROGRESS, convert, resolve_config


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of the program and of every command and subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))]


PARSER = build_parser()
COMMANDS = {" ".join(path): parser for path, parser in commands(PARSER) if path}
TRAIN = {a.dest: a for a in arguments(COMMANDS["train"])}


def same(written: str, default) -> bool:
    """Whether a default as a help text writes it ("on", "10", "0.1") is `default`."""
    if isinstance(default, bool):
        return written == ("on" if default else "off")
    if isinstance(default, (int, float)):
        try:
            return float(written) == default
        except ValueError:
            return False
    return written == str(default)


# Commands whose arguments still lack help, in files another change owns (issue 13, item 6): give the
# arguments a help text there and delete the entry (strict: the test fails as soon as they have one).
WAITING_FOR_HELP: dict[str, str] = {}


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=f"no help yet for {WAITING_FOR_HELP[c]}"))
    if c in WAITING_FOR_HELP else c for c in sorted(COMMANDS)])
def test_every_argument_of_every_command_has_a_help_text(command):
    missing = [a.option_strings[0] if a.option_strings else a.metavar or a.dest
               for a in arguments(COMMANDS[command]) if not (a.help and a.help.strip())]
    assert not missing, f"classicnets {command}: give {', '.join(missing)} a help text"


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.metadata.get("choices")])
def test_train_help_lists_exactly_the_values_the_config_accepts(name):
    """A field's values are written once, as its `choices`; --help shows them from there, never by hand."""
    choices = FIELDS[name].metadata["choices"]
    action = TRAIN[name]
    assert action.metavar == "{" + ",".join(choices) + "}"
    for value in choices:
        assert convert(name, value) == value
    with pytest.raises(ClassicNetsError, match=f"{name} must be one of {', '.join(choices)}"):
        convert(name, "conv")
    if isinstance(choices, dict):
        for value, meaning in choices.items():
            assert (f"{value} ({meaning})" if meaning else value) in action.help
    prose = FIELDS[name].metadata["help"]
    by_hand = [v for v in choices if re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", prose)]
    assert not by_hand and "e.g." not in prose, f"{name}'s help names values by hand: {by_hand or prose}"


def test_the_heads_and_init_schemes_train_offers_are_the_ones_the_nets_take():
    assert FIELDS["head"].metadata["choices"] is HEADS and tuple(HEADS) == VGG_HEADS
    assert FIELDS["init"].metadata["choices"] is INIT_SCHEMES and tuple(INIT_SCHEMES) == SCHEMES


def test_train_refuses_conv_head_and_takes_the_ones_its_help_offers(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--head", "conv", "--print-config"])
    assert stop.value.code == 2 and "head must be one of fc, gap; got 'conv'" in capsys.readouterr().err
    for head in VGG_HEADS:
        assert main(["train", "--head", head, "--print-config"]) == 0
        assert f'head = "{head}"' in capsys.readouterr().out


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if "e.g." in f.metadata["help"]])
def test_every_example_in_train_help_is_accepted(name):
    """Units included: --stop-at-accuracy is a fraction, and its help says so with an example."""
    for found in re.finditer(r"e\.g\. ([^\s,;)]+)(?: or ([^\s,;)]+))?", FIELDS[name].metadata["help"]):
        for example in filter(None, found.groups()):
            assert getattr(resolve_config({name: example}), name) is not None, example


def test_every_list_of_data_sets_in_help_is_the_catalogue():
    texts = [text for _, parser in commands(PARSER) for text in
             [parser.description or "", *(a.help or "" for a in arguments(parser))] if "fashion-mnist, " in text]
    assert texts, "train --data lists the data sets"
    for text in texts:
        listed = re.search(r"fashion-mnist(, [\w:-]+)*( or [\w:-]+)?", text).group(0)
        assert re.split(r", | or ", listed) == [*DATASETS, "folder:PATH"], text


def test_the_devices_help_names_are_accepted_and_every_command_says_the_same():
    prose = FIELDS["device"].metadata["help"]
    for device in re.split(r", | or ", prose):
        assert resolve_config(device=device.replace(":N", ":0")).device == device.replace(":N", ":0")
    for command in ("eval", "predict"):
        device = next(a for a in arguments(COMMANDS[command]) if a.dest == "device")
        assert device.help.startswith(prose) and device.default == "auto"


def test_every_default_written_in_help_is_the_default():
    """A default typed into a help text by hand must be the argument's real one (`%(default)s` is)."""
    wrong = []
    for command, parser in COMMANDS.items():
        for action in arguments(parser):
            if action.default in (None, argparse.SUPPRESS) or not action.help or "%(default)" in action.help:
                continue
            written = re.search(r"\(default:? ([^;,:)]+)", action.help)
            if written and not same(written.group(1).strip(), action.default):
                wrong.append(f"{command} {action.option_strings[0]}: help says {written.group(1)!r}, "
                             f"default is {action.default!r}")
    assert not wrong, "\n".join(wrong)


def test_eval_offers_the_crops_precisions_and_progress_modes_it_runs():
    actions = {a.dest: a for a in arguments(COMMANDS["eval"])}
    assert EVAL_CROPS == ("none", *CROP_MODES)
    assert tuple(actions["crops"].choices) == EVAL_CROPS
    assert tuple(actions["precision"].choices) == tuple(FIELDS["precision"].metadata["choices"])
    assert tuple(actions["progress"].choices) == tuple(PROGRESS) and actions["progress"].default == "auto"
    for mode in PROGRESS:
        PassProgress(mode, images=4, batches=2).close()


def test_predict_names_the_image_files_it_reads():
    images = next(a for a in arguments(COMMANDS["predict"]) if a.dest == "inputs")
    assert IMAGE_FILES == READABLE and READABLE in images.help
