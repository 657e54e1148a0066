"""TrainConfig, recipes, TOML files, CLI flags and learning-rate schedules (no training here)."""

import itertools
import math

import pytest
import torch

from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.training import RECIPES, TrainConfig, resolve_config
from classicnets.training.config import FIELDS, load_toml, parse_bytes, resume_conflicts, to_toml
from classicnets.training.schedule import LRSchedule


def test_precedence_is_defaults_then_recipe_then_file_then_explicit(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "d2l"\nlr = 0.01\nepochs = 4\n')
    c = resolve_config({"epochs": 2}, config_file=toml)
    assert c.recipe == "d2l"
    assert c.width == RECIPES["d2l"]["width"]  # from the recipe
    assert c.lr == 0.01  # the file beats the recipe
    assert c.epochs == 2  # an explicit value beats the file
    assert c.label_smoothing == TrainConfig().label_smoothing  # untouched default


def test_no_recipe_named_means_fast():
    c = resolve_config()
    assert c.recipe == "fast"
    for key, value in RECIPES["fast"].items():
        assert getattr(c, key) == value


def test_batch_size_auto_keeps_the_recipe_batch_and_turns_on_auto_batch():
    c = resolve_config(recipe="d2l", batch_size="auto")
    assert c.batch_size == RECIPES["d2l"]["batch_size"]
    assert c.auto_batch


def test_unknown_toml_key_is_named_with_a_suggestion(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("lerning_rate = 0.1\nepochs = 3\nbatchsize = 4\n")
    with pytest.raises(ClassicNetsError, match="unknown config key 'lerning_rate'"):
        load_toml(toml)
    toml.write_text("batchsize = 4\n")
    with pytest.raises(ClassicNetsError, match="did you mean 'batch_size'"):
        load_toml(toml)


def test_toml_value_of_the_wrong_type_names_the_key(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = "ten"\n')
    with pytest.raises(ClassicNetsError, match="epochs must be an integer; got 'ten'"):
        load_toml(toml)
    toml.write_text('precision = "fp8"\n')
    with pytest.raises(ClassicNetsError, match="precision must be one of fp32, bf16, fp16"):
        load_toml(toml)
    toml.write_text("epochs = [\n")
    with pytest.raises(ClassicNetsError, match="not valid TOML"):
        load_toml(toml)


def test_resolved_config_round_trips_through_toml(tmp_path):
    c = resolve_config(recipe="paper", width=None, stop_at_accuracy=0.9, batch_size="auto")
    path = tmp_path / "config.toml"
    path.write_text(to_toml(c))
    assert resolve_config(config_file=path) == c


def test_range_checks_name_the_setting():
    with pytest.raises(ClassicNetsError, match="lr must be positive"):
        resolve_config(lr=0)
    with pytest.raises(ClassicNetsError, match="unknown recipe 'fastest'"):
        resolve_config(recipe="fastest")
    with pytest.raises(ClassicNetsError, match="nesterov needs"):
        resolve_config(recipe="d2l", nesterov=True)
    with pytest.raises(ClassicNetsError, match="scale_jitter must be 'SMIN,SMAX'"):
        resolve_config(scale_jitter="256")
    with pytest.raises(ClassicNetsError, match="memory size '4 gigs'"):
        resolve_config(max_memory="4 gigs")


def test_test_time_flip_without_training_flips_is_refused_with_the_fix(capsys):
    from classicnets.cli import main

    assert resolve_config().test_flip and resolve_config(flip=False, test_flip=False).flip is False
    with pytest.raises(ClassicNetsError, match="pass --no-test-flip too"):
        resolve_config(flip=False)  # the fast recipe tests with flips
    assert main(["train", "--no-flip", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-test-flip" in err[0]


def test_memory_sizes_parse_binary_and_decimal_units():
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1.5G") == int(1.5 * 10**9)
    assert parse_bytes("1000") == 1000


def test_resume_refuses_changes_to_what_the_run_computes():
    saved = resolve_config(recipe="fast").to_dict()
    resume_conflicts(saved, {"progress": "none", "threads": 1, "max_minutes": 5.0})  # allowed
    with pytest.raises(ClassicNetsError, match="cannot resume with model='vgg16'"):
        resume_conflicts(saved, {"model": "vgg16"})
    with pytest.raises(ClassicNetsError, match="cannot change epochs when resuming a onecycle"):
        resume_conflicts(saved, {"epochs": 30})
    resume_conflicts(resolve_config(recipe="d2l").to_dict(), {"epochs": 30})  # constant lr: extending is fine


def test_every_config_field_is_a_cli_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in text, name


def test_cli_print_config_applies_recipe_file_and_flags(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text("lr = 0.02\nepochs = 7\n")
    assert main(["train", "--recipe", "d2l", "--config", str(toml), "--epochs", "3", "--no-plots",
                 "--print-config"]) == 0
    out = load_toml_text(capsys.readouterr().out, tmp_path)
    assert out["recipe"] == "d2l" and out["lr"] == 0.02 and out["epochs"] == 3 and out["plots"] is False
    assert out["size"] == 224


def load_toml_text(text, tmp_path):
    path = tmp_path / "out.toml"
    path.write_text(text)
    return load_toml(path)


def test_cli_bad_flag_value_is_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--lr", "fast"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "lr must be a number; got 'fast'" in err and "Traceback" not in err


def test_cli_unknown_key_in_config_file_exits_2(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text("epoch = 3\n")
    assert main(["train", "--config", str(toml), "--print-config"]) == 2
    assert "unknown config key 'epoch'; did you mean 'epochs'?" in capsys.readouterr().err


# --- schedules ------------------------------------------------------------------------------------------


def _schedule(steps_per_epoch=10, **overrides):
    c = resolve_config({"recipe": "custom", "lr": 1.0, "momentum": 0.9, "epochs": 10, **overrides})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=c.lr, momentum=c.momentum)
    return LRSchedule(opt, c, steps_per_epoch), opt


def _lrs(schedule, opt, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        schedule.step()
    return out


def test_onecycle_rises_to_the_peak_then_anneals_to_almost_zero():
    schedule, opt = _schedule(schedule="onecycle", onecycle_pct=0.25)
    lrs = _lrs(schedule, opt, 100)
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 25
    assert lrs[-1] < 1e-3
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95, abs=1e-3)  # back up at the end


def test_onecycle_tail_anneals_to_its_lr_then_falls_linearly_to_zero():
    schedule, opt = _schedule(schedule="onecycle", onecycle_pct=0.25, onecycle_tail_pct=0.4, onecycle_tail_lr=0.02)
    lrs = _lrs(schedule, opt, 100)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 25  # the rise is unchanged
    assert lrs[60] == pytest.approx(0.02)  # the knee: the cosine has come down to the tail's lr
    assert lrs[40] == pytest.approx(0.02 + 0.98 * (1 + math.cos(math.pi * 15 / 35)) / 2)
    assert lrs[80] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.02 / 40)  # a straight line to zero
    assert all(a >= b for a, b in itertools.pairwise(lrs[25:]))
    plain, opt2 = _schedule(schedule="onecycle", onecycle_pct=0.25)
    assert _lrs(plain, opt2, 100)[:26] == lrs[:26]


def test_onecycle_tail_of_a_tiny_run_stays_finite_and_ends_at_zero():
    schedule, opt = _schedule(steps_per_epoch=1, epochs=3, schedule="onecycle", onecycle_pct=0.5,
                              onecycle_tail_pct=0.4)
    lrs = _lrs(schedule, opt, 3)
    assert all(math.isfinite(x) and x >= 0 for x in lrs)
    assert opt.param_groups[0]["lr"] == 0.0  # after the last step


def test_cosine_with_warmup_starts_small_and_ends_at_zero():
    schedule, opt = _schedule(schedule="cosine", warmup_epochs=1)
    lrs = _lrs(schedule, opt, 100)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(math.cos(math.pi * 9 / 100) / 2 + 0.5)
    assert lrs[-1] < 0.01


def test_step_schedule_divides_every_lr_step_epochs():
    schedule, opt = _schedule(schedule="step", lr_step_epochs=3, lr_decay=0.1)
    lrs = _lrs(schedule, opt, 70)
    assert lrs[29] == pytest.approx(1.0) and lrs[30] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)


def test_plateau_divides_by_ten_at_most_max_lr_drops_times():
    schedule, opt = _schedule(schedule="plateau", plateau_patience=1, max_lr_drops=3)
    messages = [schedule.epoch_end(acc) for acc in (0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6)]
    assert sum(m is not None for m in messages) == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    restored, opt2 = _schedule(schedule="plateau")
    restored.load_state_dict(schedule.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, r"seed must be in \[0, 4294967295\]; got -1"),
    ("seed", 2**70, r"seed must be in \[0, 4294967295\]"),
    ("momentum", 5.0, r"momentum must be in \[0, 1\); got 5.0"),
    ("weight_decay", -1.0, "weight_decay must be at least 0; got -1.0"),
    ("grad_clip", 0.0, "grad_clip must be more than 0; got 0.0"),
    ("lr_step_epochs", 0, "lr_step_epochs must be at least 1; got 0"),
    ("lr_decay", 0.0, r"lr_decay must be in \(0, 1\]; got 0.0"),
    ("onecycle_tail_pct", 1.0, r"onecycle_tail_pct must be in \[0, 1\); got 1.0"),
    ("onecycle_tail_pct", 0.8, r"onecycle_pct \+ onecycle_tail_pct must be below 1 .* got 0.25 \+ 0.8"),
    ("onecycle_tail_lr", 0.0, r"onecycle_tail_lr must be in \(0, 1\]; got 0.0"),
    ("plateau_patience", 0, "plateau_patience must be at least 1"),
    ("max_lr_drops", -1, "max_lr_drops must be at least 0"),
    ("max_minutes", -1.0, "max_minutes must be more than 0"),
    ("checkpoint_every", -1, "checkpoint_every must be at least 0"),
    ("checkpoint_seconds", -5.0, "checkpoint_seconds must be at least 0"),
    ("width", 1e9, r"width must be in \(0, 64\]"),
    ("name", "a" * 300, "name is 300 bytes long, over the 255"),
    ("name", "a/b", "name must be a folder name without '/'"),
    ("name", "..", "name must be a folder name"),
    ("run_dir", "", "run_dir must be a folder path"),
    ("run_dir", "runs/" + "b" * 256, "run_dir has a part of 256 bytes"),
])
def test_values_outside_their_range_are_one_line_before_anything_runs(key, value, message):
    with pytest.raises(ClassicNetsError, match=message):
        resolve_config({key: value})


def test_threads_beyond_what_openmp_can_take_are_refused_not_a_crash():
    from classicnets.training.runtime import cpu_cores, torch_settings

    with pytest.raises(ClassicNetsError, match=f"threads must be between 1 and {8 * cpu_cores()}"), \
            torch_settings(threads=100000):
        pass


def test_a_config_file_nested_too_deeply_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ClassicNetsError, match="nests too deeply"):
        resolve_config(config_file=deep)


def test_a_config_that_is_a_device_or_far_too_large_is_refused_before_reading(tmp_path):
    with pytest.raises(ClassicNetsError, match="is not a regular file"):
        resolve_config(config_file="/dev/zero")
    sparse = tmp_path / "huge.toml"
    with open(sparse, "wb") as f:
        f.truncate(10 * 2**30)  # 10 GiB of nothing, no disk used
    with pytest.raises(ClassicNetsError, match="far more than a config"):
        resolve_config(config_file=sparse)


def test_a_run_name_with_control_characters_is_refused():
    with pytest.raises(ClassicNetsError, match="without '/' or control characters"):
        resolve_config(name="run\n\x1b[31mred")


def test_the_d2l_recipe_trains_the_tutorials_43m_parameter_vgg11_and_other_nets_ignore_its_fc_width():
    from classicnets.training.setup import make_model

    config = resolve_config(recipe="d2l")
    assert config.fc_width == 4096 and config.width == 0.25
    with torch.device("meta"):
        model, kwargs = make_model(config, 10, 1, 224)
        assert kwargs["fc_width"] == 4096 and sum(p.numel() for p in model.parameters()) == 43_093_322
        # the recipe's fc_width is VGG's; NiN has no FC layers, so it does not apply...
        assert "fc_width" not in make_model(resolve_config(recipe="d2l", model="nin"), 10, 1, 224)[1]
        # ...but asked for explicitly, it is refused by name
        with pytest.raises(ClassicNetsError, match="has no option 'fc_width'"):
            make_model(resolve_config(recipe="d2l", model="nin", fc_width=512), 10, 1, 224)
    with pytest.raises(ClassicNetsError, match="fc_width must be"):
        resolve_config(fc_width=0)
