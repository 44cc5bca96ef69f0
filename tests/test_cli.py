"""The CLI: bad input gives one clear line and exit code 2, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      [sys.executable, "-m", "algoperf_avg.cli", *args],
      capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
  )


def assert_usage_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  # One message (it may list details on indented lines), never a traceback.
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines[0].startswith("error: "), result.stderr
  assert all(line.startswith(" ") for line in lines[1:-1]), result.stderr
  assert "Traceback" not in result.stderr
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr


@pytest.fixture
def exp(tmp_path):
  return tmp_path / "exp"


def test_unknown_command():
  assert_usage_error(cli("frobnicate"), "unknown command", "run")


def test_unknown_flag():
  assert_usage_error(cli("run", "--no_such_flag=1"), "no_such_flag")


def test_unknown_workload_suggests_and_writes_nothing(exp):
  result = cli("run", "--workload=ogbgg", f"--experiment_dir={exp}")
  assert_usage_error(result, "unknown workload 'ogbgg'", "did you mean 'ogbg'")
  assert not exp.exists()


def test_unknown_size(exp):
  assert_usage_error(cli("run", "--size=huge", f"--experiment_dir={exp}"),
                     "no size 'huge'")
  assert not exp.exists()


def test_full_size_needs_a_data_dir(exp, tmp_path):
  result = cli("run", "--size=full", f"--data_dir={tmp_path / 'missing'}",
               f"--experiment_dir={exp}")
  assert_usage_error(result, "--data_dir")
  assert not exp.exists()


def test_full_size_with_an_empty_data_root_writes_nothing(exp, tmp_path):
  empty = tmp_path / "data"
  empty.mkdir()
  result = cli("run", "--size=full", f"--data_dir={empty}", f"--experiment_dir={exp}")
  assert_usage_error(result, "no prepared ogbg_molpcba", "setup-data ogbg")
  assert not exp.exists()  # no flags/hparams/meta/status files left behind


def test_unknown_workload_option(exp):
  result = cli("run", "--workload_option=colour=red", f"--experiment_dir={exp}")
  assert_usage_error(result, "no option 'colour'", "eval_batch_size")
  assert not exp.exists()
  assert_usage_error(cli("run", "--workload_option=colour", f"--experiment_dir={exp}"),
                     "NAME=VALUE")


def test_setup_data_errors(tmp_path):
  assert_usage_error(cli("setup-data", "ogbg"), "--data_dir")
  assert_usage_error(cli("setup-data", "ogbgg", f"--data_dir={tmp_path}"),
                     "unknown workload")
  assert_usage_error(cli("setup-data", "ogbg", f"--data_dir={tmp_path}",
                         f"--raw_dir={tmp_path}"), "takes no options")
  assert_usage_error(cli("setup-data", f"--data_dir={tmp_path}"), "usage")
  # A dataset shared by workloads goes by its own name.
  assert_usage_error(cli("setup-data", "imagenet", f"--data_dir={tmp_path}"),
                     "--manual_dir", "ILSVRC2012_img_train.tar")
  assert_usage_error(cli("setup-data", "imagenet", f"--data_dir={tmp_path}",
                         f"--manual_dir={tmp_path}"), "lacks", "image-net.org")
  assert not os.listdir(tmp_path)


def test_missing_submission_file(exp, tmp_path):
  result = cli("run", f"--submission={tmp_path / 'nope.py'}", f"--experiment_dir={exp}")
  assert_usage_error(result, "does not exist")
  assert not exp.exists()


def test_unknown_submission_name(exp):
  assert_usage_error(cli("run", "--submission=nadamv", f"--experiment_dir={exp}"),
                     "unknown submission 'nadamv'", "nadamw")


def test_submission_missing_functions(exp, tmp_path):
  path = tmp_path / "half.py"
  path.write_text("def get_batch_size(name):\n  return 8\n")
  result = cli("run", f"--submission={path}", f"--experiment_dir={exp}")
  assert_usage_error(result, "make_optimizer", "update_params", "data_selection")
  assert "get_batch_size," not in result.stderr  # it is there, so not listed
  assert not exp.exists()


def test_submission_that_does_not_import(exp, tmp_path):
  path = tmp_path / "broken.py"
  path.write_text("def make_optimizer(:\n")
  assert_usage_error(cli("run", f"--submission={path}", f"--experiment_dir={exp}"),
                     "could not import", "SyntaxError")
  assert not exp.exists()


@pytest.mark.parametrize("text, fragment", [
    ('{"learning_rate": {"min": 1e-3, "max": ', "space.json"),
    ('{"learning_rate": {"min": 1e-3, "max": 1e-2, "scaling": "cubic"}}', "cubic"),
    ("[1, 2, 3]", "space.json"),
])
def test_malformed_search_space(exp, tmp_path, text, fragment):
  path = tmp_path / "space.json"
  path.write_text(text)
  result = cli("run", f"--tuning_search_space={path}", f"--experiment_dir={exp}")
  assert_usage_error(result, fragment)
  assert not exp.exists()


def test_unknown_hyperparameter_name(exp, tmp_path):
  path = tmp_path / "space.json"
  path.write_text('{"learning_rte": {"feasible_points": [0.001]}}')
  result = cli("run", f"--tuning_search_space={path}", f"--experiment_dir={exp}")
  assert_usage_error(result, "learning_rte", "learning_rate")
  assert not exp.exists()


def test_missing_search_space_file(exp, tmp_path):
  result = cli("run", f"--tuning_search_space={tmp_path / 'none.json'}",
               f"--experiment_dir={exp}")
  assert_usage_error(result, "none.json")
  assert not exp.exists()


def test_new_submission_refuses_to_overwrite(tmp_path):
  first = cli("new-submission", "my_opt", f"--out={tmp_path / 'my_opt.py'}")
  assert first.returncode == 0, first.stderr
  again = cli("new-submission", "my_opt", f"--out={tmp_path / 'my_opt.py'}")
  assert_usage_error(again, "already exists")
  assert_usage_error(cli("new-submission", "not-valid", f"--out={tmp_path / 'x.py'}"),
                     "identifier")


def test_dry_run_prints_memory_and_writes_nothing(exp, tmp_path):
  result = cli("run", "--size=full", "--submission=nadamw_lawa", "--dry_run",
               f"--experiment_dir={exp}", f"--data_dir={tmp_path / 'no_data_needed'}")
  assert result.returncode == 0, result.stderr
  assert "ogbg x nadamw_lawa" in result.stdout and "MiB per device" in result.stdout
  params_mib = float(result.stdout.split("params")[1].split()[0])
  assert params_mib == round(3_554_176 * 4 / 2**20, 1)  # full OGBG in float32
  step = {k: float(result.stdout.split(f"train step {k}")[1].split()[0])
          for k in ("argument", "output", "alias", "temp", "bound")}
  assert step["bound"] == pytest.approx(
      step["argument"] + step["output"] - step["alias"] + step["temp"], abs=0.2)
  assert step["bound"] >= step["argument"] + step["temp"] - 0.2
  assert not exp.exists()


def test_help_lists_commands_and_each_commands_flags():
  overview = cli("--help")
  assert overview.returncode == 0
  for command in ("run", "tune", "benchmark", "score", "plot", "posthoc", "setup-data"):
    assert f"  {command} " in overview.stdout
  run = cli("run", "--help")
  assert run.returncode == 0
  assert "--sweep_averages=A,B,..." in run.stdout and "--dry_run" in run.stdout
  assert "examples:" in run.stdout and "--lawa" not in run.stdout
  posthoc = cli("posthoc", "-h")
  assert "--bn_policy={latest|recompute}" in posthoc.stdout
  assert "--workload=" not in posthoc.stdout


def test_a_flag_the_command_does_not_use_is_an_error(exp):
  assert_usage_error(cli("list", "--lawa=1:2"), "list does not use --lawa", "--help")
  assert_usage_error(cli("run", "--reference=nadamw", f"--experiment_dir={exp}"),
                     "run does not use --reference")
  assert not exp.exists()


def test_posthoc_power_ema_widths_are_checked_before_anything_is_read(tmp_path):
  trial = tmp_path / "trial"
  trial.mkdir()
  (trial / "meta_data_0.json").write_text('{"workload": "ogbg", "size": "small"}')
  (trial / "hparams.json").write_text("{}")
  out = tmp_path / "out"
  assert_usage_error(cli("posthoc", str(trial), "--ema_sigma_rel=abc", f"--out={out}"),
                     "--ema_sigma_rel: 'abc' is not a number")
  assert_usage_error(cli("posthoc", str(trial), "--ema_sigma_rel=0.5", f"--out={out}"),
                     "sigma_rel must be in (0, 0.2887]")
  assert_usage_error(cli("posthoc", str(trial), "--ema_gamma=7", "--lawa=1:2",
                         f"--out={out}"), "not both")
  assert_usage_error(cli("posthoc", str(trial), "--ema_sigma_rel=0.1", f"--out={out}"),
                     "no saved weights")
  assert not out.exists()
  assert "--ema_sigma_rel" in cli("posthoc", "-h").stdout
