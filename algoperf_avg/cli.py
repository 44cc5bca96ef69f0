"""``algoperf-avg``: run, tune, benchmark, list, new-submission, score, plot,
posthoc, setup-data.

Every command validates all of its input before it writes anything; bad input
prints one ``error: ...`` line and exits with code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from algoperf_avg import commands as commands_lib
from algoperf_avg import spec

COMMANDS = tuple(commands_lib.COMMANDS)

_WORKLOAD = flags.DEFINE_string("workload", "ogbg", "Registered workload name.")
_SIZE = flags.DEFINE_string("size", "small", "Workload size: full or small.")
_WORKLOAD_OPTION = flags.DEFINE_multi_string(
    "workload_option", [],
    "NAME=VALUE workload option (repeatable), e.g. eval_batch_size=256; "
    "`algoperf-avg list --options` shows each workload's.",
)
_SUBMISSION = flags.DEFINE_string(
    "submission", "nadamw", "Submission name (see submissions/) or path to a .py file."
)
_SUBMISSIONS = flags.DEFINE_list(
    "submissions", ["nadamw", "nadamw_ema"], "benchmark: submissions to compare."
)
_SEARCH_SPACE = flags.DEFINE_string(
    "tuning_search_space", None,
    "Search-space JSON (AlgoPerf format). Default: the workload's reference "
    "hyperparameters plus the submission's defaults, one trial.",
)
_NUM_TRIALS = flags.DEFINE_integer(
    "num_tuning_trials", None, "Trials per study (default: 1 for run, the ruleset's for tune).",
    lower_bound=1,
)
_NUM_STUDIES = flags.DEFINE_integer(
    "num_studies", None, "tune: independent studies (default: the ruleset's, 3).",
    lower_bound=1,
)
_EXPERIMENT_DIR = flags.DEFINE_string(
    "experiment_dir", None,
    "Where logs go: EXP/study_0/<workload>_jax/trial_<i>/ (run), "
    "EXP/<submission>/study_0/... (benchmark).",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Data root (full sizes): one folder per dataset, DATA/ogbg, DATA/imagenet, ...",
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "setup-data: folder of the archives a user downloads by hand.")
_RAW_DIR = flags.DEFINE_string("raw_dir", None, "setup-data: folder of the raw release.")
_OPTIONS = flags.DEFINE_boolean("options", False, "list: also list each workload's options.")
_CHECKPOINT_EVERY = flags.DEFINE_float(
    "checkpoint_every_sec", None,
    "Seconds between checkpoints (taken at evals); default: adaptive, under 2% of the "
    "wall time; 0: at every eval.", lower_bound=0.0,
)
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run", False,
    "run: print the memory per device of this workload x submission on these devices "
    "(XLA's analysis of the compiled train step) and exit; nothing is trained or written.",
)
_RNG_SEED = flags.DEFINE_integer("rng_seed", 0, "Seed of the first trial.")
_MAX_STEPS = flags.DEFINE_integer("max_global_steps", None, "Stop after this many steps.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every_steps", None, "Evaluate every N steps instead of every eval period."
)
_STOP_AT_TARGET = flags.DEFINE_boolean(
    "stop_at_target", True,
    "Stop a trial once both the validation and the test targets are reached "
    "(each at some evaluation; workloads without a test split: the validation one)."
)
_RULESET = flags.DEFINE_enum("ruleset", "external", ["external", "self"], "Tuning ruleset.")
_REFERENCE = flags.DEFINE_string("reference", None, "score/plot: reference submission.")
_HELD_OUT = flags.DEFINE_boolean(
    "held_out_rule", False, "score/plot: apply AlgoPerf v0.5's held-out variant rule."
)
_VERSION = flags.DEFINE_enum(
    "version", None, ["v0.5", "v0.6"],
    "score/plot: leaderboard rules (budgets); default: inferred from the path, else v0.6.",
)
_ONLINE = flags.DEFINE_boolean(
    "online", False, "score/plot: also score the online weights (validation_online/*)."
)
_STEPS = flags.DEFINE_boolean("steps", False, "score: report steps instead of seconds.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-host: host:port of process 0 (or set JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_SAVE_PARAMS_EVERY = flags.DEFINE_integer(
    "save_params_every", None,
    "Keep the weights every N steps (in the trial's params/) for `posthoc` sweeps.",
    lower_bound=1,
)
_POSTHOC_GRID = flags.DEFINE_list(
    "posthoc_grid", [],
    "Keep only the snapshots these averages need, e.g. lawa:64:20,ema:8:0.99,swa:1:500 "
    "(METHOD:EVERY:WINDOW|DECAY[:START], swa:EVERY:START); powerema:S:GAMMA keeps a "
    "power EMA every S steps (two of them: --ema_sigma_rel in posthoc).",
)
_SWEEP_AVERAGES = flags.DEFINE_list(
    "sweep_averages", [],
    "Evaluate these averages of the training weights alongside the run, each logged "
    "as its own submission beside it, e.g. lawa:1:20,ema:4:0.9 (same form as "
    "--posthoc_grid).",
)
_SNAPSHOT_DTYPE = flags.DEFINE_enum(
    "snapshot_dtype", None, ["float32", "bfloat16"],
    "Float dtype of post-hoc snapshots (default: the params' own).",
)
_LAWA = flags.DEFINE_list(
    "lawa", [], "posthoc: LAWA points EVERY:WINDOW[:START], e.g. 64:20,128:10.")
_EMA = flags.DEFINE_list("ema", [], "posthoc: EMA points EVERY:DECAY[:START], e.g. 1:0.999.")
_SWA = flags.DEFINE_list("swa", [], "posthoc: SWA points EVERY:START, e.g. 1:500.")
_EMA_SIGMA_REL = flags.DEFINE_list(
    "ema_sigma_rel", [],
    "posthoc: power-EMA widths (relative std, Karras et al.) to synthesise from a run's "
    "powerema snapshots, e.g. 0.05,0.1,0.2.")
_EMA_GAMMA = flags.DEFINE_list(
    "ema_gamma", [], "posthoc: power-EMA exponents to synthesise, e.g. 6.94,16.97.")
_BN_POLICY = flags.DEFINE_enum(
    "bn_policy", None, ["latest", "recompute"],
    "posthoc: batch statistics of the averages (default: the run's bn_policy).",
)
_OUT = flags.DEFINE_string("out", None, "Output file (score CSV, new-submission) or folder (plot).")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    rest = flags.FLAGS(list(argv))
  except flags.Error as e:
    _fail(str(e))
  if not flags.FLAGS["verbosity"].present:
    # JAX's start-up INFO lines (e.g. "no TPU") are noise at the terminal.
    logging.set_verbosity(logging.WARNING)
  return rest


def _workload_options() -> dict[str, str]:
  from algoperf_avg.kit import config

  try:
    return config.parse_assignments(_WORKLOAD_OPTION.value)
  except ValueError as e:
    raise spec.UsageError(str(e)) from None


def _workload(name: str | None = None, size: str | None = None):
  from algoperf_avg import registry

  return registry.get_workload(name or _WORKLOAD.value, size or _SIZE.value,
                               **_workload_options())


def _experiment_dir(default: str) -> str:
  return _EXPERIMENT_DIR.value or default


# --------------------------------------------------------------------- run


def _prepare_run(submission_ref: str, num_studies: int = 1):
  """Validate everything a run needs and sample its trials; write nothing.

  Returns ``(workload, submission, studies)``, ``studies`` being one list of
  trial hyperparameters per study.
  """
  from algoperf_avg import registry
  from algoperf_avg.averaging import snapshots
  from algoperf_avg.training import tuning

  workload = _workload()
  if not _DRY_RUN.value:
    workload.check_data(_DATA_DIR.value)
  for grid in (_POSTHOC_GRID.value, _SWEEP_AVERAGES.value):
    snapshots.parse_grid(grid)  # a bad grid is an error before any write
  submission = registry.load_submission(submission_ref)
  ruleset = tuning.get_ruleset(_RULESET.value)
  if _SEARCH_SPACE.value:
    if not ruleset.uses_search_space:
      ruleset.check_args(_SEARCH_SPACE.value)
    space = tuning.load_search_space(_SEARCH_SPACE.value)
    num_trials = _NUM_TRIALS.value or (None if space.is_fixed else 1)
    studies = tuning.sample_studies(
        space, num_studies, num_trials or len(space.fixed_points), seed=_RNG_SEED.value
    )
  else:
    studies = [[{}] * (_NUM_TRIALS.value or 1)] * num_studies
  if submission.hparam_names is not None:
    # bn_policy / bn_batches are the runner's, for any submission.
    allowed = (submission.hparam_names | set(workload.reference_hparams)
               | {"bn_policy", "bn_batches"})
    for trial in studies[0]:
      tuning.check_hparam_names(trial, allowed, source=_SEARCH_SPACE.value)
  return workload, submission, studies


def _run_trials(workload, submission, studies, experiment_dir: str, seed: int):
  """Run every trial of every study; finished trials (on rerun) are skipped."""
  from algoperf_avg.averaging import snapshots
  from algoperf_avg.training import logs, runner
  from algoperf_avg.training.progress import ProgressBar

  results, failed = [], 0
  for study, trials in enumerate(studies):
    for index, trial_hparams in enumerate(trials, start=1):
      log_dir = logs.trial_dir(experiment_dir, study, workload.workload_id, index)
      label = f"{submission.name} study {study} trial {index}/{len(trials)}"
      finished = runner.load_finished(log_dir, workload)
      if finished is not None:
        print(f"{label}: already {finished.status}, skipped ({log_dir})", file=sys.stderr)
        results.append(finished)
        continue
      hparams = runner.resolve_hparams(workload, submission, trial_hparams,
                                       ruleset=_RULESET.value)
      bar = ProgressBar(label)
      options = runner.RunOptions(
          max_global_steps=_MAX_STEPS.value,
          eval_every_steps=_EVAL_EVERY.value,
          stop_at_target=_STOP_AT_TARGET.value,
          budget_multiplier=1.5 if _RULESET.value == "self" else 1.0,
          flags=flags.FLAGS.flag_values_dict(),
          progress=bar.update,
          save_params_every=_SAVE_PARAMS_EVERY.value,
          posthoc_grid=tuple(snapshots.parse_grid(_POSTHOC_GRID.value)),
          snapshot_dtype=_SNAPSHOT_DTYPE.value,
          sweep_averages=tuple(snapshots.parse_grid(_SWEEP_AVERAGES.value)),
          checkpoint_every_sec=_CHECKPOINT_EVERY.value,
      )
      try:
        result = runner.train_once(
            workload, submission, hparams, seed + 1000 * study + index - 1,
            _DATA_DIR.value, log_dir, options,
        )
      except spec.UsageError:
        raise
      except Exception as e:  # one failed trial does not stop the study
        bar.close()
        failed += 1
        print(f"{label} failed ({log_dir}): {type(e).__name__}: {e}", file=sys.stderr)
        continue
      bar.close()
      results.append(result)
  return results, failed


def _finish(workload, named_results, failed: int, exp: str) -> None:
  from algoperf_avg.training.progress import format_summary

  print(format_summary(workload, named_results))
  print(f"logs: {os.path.abspath(exp)}  (score: algoperf-avg score {exp})")
  if failed:
    print(f"{failed} trial(s) failed; see status.json in their folders", file=sys.stderr)
    sys.exit(1)


def _cmd_run(num_studies: int = 1) -> None:
  """One submission: N trials in each of M studies (``run`` uses one study)."""
  workload, submission, studies = _prepare_run(_SUBMISSION.value, num_studies)
  if _DRY_RUN.value:
    from algoperf_avg.training import memory, runner, sharding

    hparams = runner.resolve_hparams(workload, submission, studies[0][0],
                                     ruleset=_RULESET.value)
    batch_size = runner.global_batch_size(workload, submission)
    print(memory.report(workload, submission, hparams, sharding.make_mesh(), batch_size,
                        _DATA_DIR.value).format())
    return
  exp = _experiment_dir(os.path.join("experiments", submission.name))
  results, failed = _run_trials(workload, submission, studies, exp, _RNG_SEED.value)
  _finish(workload, [(submission.name, r) for r in results], failed, exp)


def _cmd_tune() -> None:
  from algoperf_avg.training import tuning

  ruleset = tuning.get_ruleset(_RULESET.value)
  ruleset.check_args(_SEARCH_SPACE.value, _NUM_TRIALS.value)
  _cmd_run(_NUM_STUDIES.value or ruleset.num_studies)


def _cmd_benchmark() -> None:
  """Several submissions on one workload, one trial each, then a comparison."""
  prepared = [_prepare_run(ref) for ref in _SUBMISSIONS.value]
  exp = _experiment_dir(os.path.join("experiments", "benchmark"))
  rows, failed = [], 0
  for workload, submission, studies in prepared:
    results, n_failed = _run_trials(
        workload, submission, [studies[0][:1]], os.path.join(exp, submission.name),
        _RNG_SEED.value,
    )
    failed += n_failed
    rows += [(submission.name, r) for r in results]
  _finish(prepared[0][0], rows, failed, exp)


# -------------------------------------------------------------- the others


def _cmd_list() -> None:
  from algoperf_avg import registry
  from algoperf_avg.kit import config

  header = (f"{'workload':<24}{'size':<7}{'params':>13}  {'metric':<24}{'target':>10}"
            f"{'step_hint':>10}{'budget':>12}")
  print(header)
  for name in sorted(registry.WORKLOADS):
    cls = registry.workload_class(name)
    for size in cls.sizes:
      d = cls(size).describe()
      arrow = ">" if d["direction"] == "max" else "<"
      budget = (f"{d['step_budget']:,} steps" if d["step_budget"]
                else f"{d['max_runtime_sec']:,.0f} s")
      print(
          f"{name:<24}{size:<7}{d['params']:>13,}  {d['metric']:<24}"
          f"{arrow}{d['validation_target']:>9g}{d['step_hint']:>10,}{budget:>12}"
      )
    if _OPTIONS.value:
      for option, spec_ in sorted((dict(config.COMMON_OPTIONS) | dict(cls.options)).items()):
        print(f"    --workload_option={option}=...  {spec_.help} (default {spec_.default!r})")


def _cmd_setup_data(args: list[str]) -> None:
  from algoperf_avg import registry

  if len(args) != 1:
    raise spec.UsageError("usage: algoperf-avg setup-data WORKLOAD --data_dir=DIR "
                          "[--manual_dir=DIR] [--raw_dir=DIR]")
  if not _DATA_DIR.value:
    raise spec.UsageError("setup-data needs --data_dir=DIR (the data root)")
  cls = registry.setup_data_class(args[0])
  given = {"manual_dir": _MANUAL_DIR.value, "raw_dir": _RAW_DIR.value}
  path = cls.setup_data(_DATA_DIR.value, **{k: v for k, v in given.items() if v})
  print(f"prepared {args[0]} in {path}")


def _cmd_new_submission(args: list[str]) -> None:
  from algoperf_avg.templates import write_submission_template

  if len(args) != 1:
    raise spec.UsageError("usage: algoperf-avg new-submission NAME [--out PATH]")
  path = write_submission_template(args[0], _OUT.value)
  print(f"wrote {path}\ntry it: algoperf-avg run --submission={path} --workload=ogbg --size=small")


def _ruleset_given() -> str | None:
  """--ruleset when given; None lets the scorer infer it from the log path."""
  return _RULESET.value if flags.FLAGS["ruleset"].present else None


def _cmd_score(args: list[str]) -> None:
  from algoperf_avg.analysis import scoring

  if len(args) != 1:
    raise spec.UsageError("usage: algoperf-avg score EXP_DIR [--ruleset external|self] [--reference NAME] [--steps] [--out CSV]")
  print(scoring.score_command(
      args[0], ruleset=_ruleset_given(), reference=_REFERENCE.value, steps=_STEPS.value,
      out_csv=_OUT.value, held_out_rule=_HELD_OUT.value, version=_VERSION.value,
      online=_ONLINE.value,
  ))


def _cmd_plot(args: list[str]) -> None:
  from algoperf_avg.analysis import plots

  if len(args) != 1:
    raise spec.UsageError("usage: algoperf-avg plot EXP_DIR --out DIR")
  for path in plots.plot_command(
      args[0], _OUT.value or "plots", ruleset=_ruleset_given(), version=_VERSION.value,
      held_out_rule=_HELD_OUT.value, reference=_REFERENCE.value, steps=_STEPS.value,
      online=_ONLINE.value,
  ):
    print(f"wrote {path}")


def _cmd_posthoc(args: list[str]) -> None:
  from algoperf_avg.averaging import posthoc

  if len(args) != 1:
    raise spec.UsageError("usage: algoperf-avg posthoc TRIAL_DIR --lawa=EVERY:WINDOW,... "
                          "--ema=EVERY:DECAY,... --swa=EVERY:START,... "
                          "| --ema_sigma_rel=S,... --ema_gamma=G,... [--bn_policy=...] "
                          "[--out DIR] [--data_dir DIR]")
  out = _OUT.value or os.path.join("experiments", "posthoc")
  for path in posthoc.posthoc_command(args[0], out, _LAWA.value, _EMA.value, _DATA_DIR.value,
                                      swa=_SWA.value, bn_policy=_BN_POLICY.value,
                                      ema_sigma_rel=_EMA_SIGMA_REL.value,
                                      ema_gamma=_EMA_GAMMA.value):
    print(f"wrote {path}")
  print(f"score them: algoperf-avg score {out}")


def main(argv: Sequence[str]) -> None:
  """Dispatch ``algoperf-avg COMMAND [args] [--flags]``."""
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = f" {argv[1]!r}" if len(argv) > 1 else ""
    _fail(f"unknown command{given}; choose one of: {', '.join(COMMANDS)}")
  command, args = argv[1], list(argv[2:])
  defining_module = flags.FLAGS.find_module_defining_flag("workload")
  wrong = commands_lib.misplaced(command, defining_module)
  if wrong:
    _fail(f"{command} does not use {', '.join('--' + w for w in wrong)}; "
          f"algoperf-avg {command} --help lists its flags")
  handlers = {
      "run": lambda: _cmd_run(),
      "tune": lambda: _cmd_tune(),
      "benchmark": lambda: _cmd_benchmark(),
      "list": lambda: _cmd_list(),
      "new-submission": lambda: _cmd_new_submission(args),
      "score": lambda: _cmd_score(args),
      "plot": lambda: _cmd_plot(args),
      "posthoc": lambda: _cmd_posthoc(args),
      "setup-data": lambda: _cmd_setup_data(args),
  }
  try:
    if command in ("run", "tune", "benchmark"):
      from algoperf_avg.training import sharding

      sharding.initialize_distributed(
          _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
      )
    handlers[command]()
  except spec.UsageError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    print("\ninterrupted; logs written so far are complete", file=sys.stderr)
    sys.exit(130)


def _help(argv: Sequence[str]) -> str | None:
  """The help text when ``argv`` asks for it (``--help``, ``-h``), else None."""
  if not any(a in ("--help", "-h", "-?", "--helpshort") for a in argv[1:]):
    return None
  named = [a for a in argv[1:] if not a.startswith("-")]
  if named and named[0] in commands_lib.COMMANDS:
    return commands_lib.command_help(named[0])
  return commands_lib.overview()


def run() -> None:
  """Console-script entry point."""
  from algoperf_avg.training import sharding

  text = _help(sys.argv)
  if text is not None:
    print(text)
    sys.exit(0)
  # Before JAX starts its backend: on CPU, several host devices use every core.
  sharding.cpu_device_flags()
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
