"""The commands of ``algoperf-avg``: what each does, its flags, examples, help.

One table drives ``algoperf-avg --help``, ``algoperf-avg COMMAND --help``
and the check that a command is only given flags it uses (a flag of another
command is an error, exit 2, instead of being silently ignored).
"""

from __future__ import annotations

import dataclasses

from absl import flags

_TRAINING = (
    "workload", "size", "workload_option", "data_dir", "rng_seed", "max_global_steps",
    "eval_every_steps", "stop_at_target", "ruleset", "experiment_dir",
    "tuning_search_space", "num_tuning_trials", "save_params_every", "posthoc_grid",
    "snapshot_dtype", "sweep_averages", "checkpoint_every_sec", "coordinator_address",
    "num_processes", "process_id",
)
_SCORING = ("ruleset", "reference", "steps", "held_out_rule", "version", "online", "out")


@dataclasses.dataclass(frozen=True)
class Command:
  summary: str
  usage: str
  flags: tuple[str, ...]
  examples: tuple[str, ...]


COMMANDS: dict[str, Command] = {
    "run": Command(
        "Train one submission on one workload (one study of N trials), AlgoPerf's logs.",
        "algoperf-avg run [--workload=ogbg --size=small --submission=NAME|FILE.py ...]",
        ("submission", "dry_run", *_TRAINING),
        ("algoperf-avg run --submission=nadamw_lawa --rng_seed=1",
         "algoperf-avg run --submission=my_opt.py --tuning_search_space=space.json "
         "--num_tuning_trials=5",
         "algoperf-avg run --size=full --data_dir=DATA --submission=nadamw_lawa --dry_run",
         "algoperf-avg run --sweep_averages=lawa:1:20,ema:4:0.9 --nostop_at_target")),
    "tune": Command(
        "Run M studies of N trials (Halton points of a search space) in AlgoPerf's layout.",
        "algoperf-avg tune --submission=NAME --tuning_search_space=space.json [...]",
        ("submission", "num_studies", *_TRAINING),
        ("algoperf-avg tune --submission=nadamw --tuning_search_space=space.json "
         "--num_studies=3 --num_tuning_trials=5",
         "algoperf-avg tune --submission=schedule_free_adamw --ruleset=self")),
    "benchmark": Command(
        "Several submissions on one workload, one trial each, then a comparison table.",
        "algoperf-avg benchmark [--submissions=nadamw,nadamw_ema,...]",
        ("submissions", *_TRAINING),
        ("algoperf-avg benchmark",
         "algoperf-avg benchmark --submissions=nadamw,nadamw_lawa,nadamw_ema --rng_seed=2")),
    "list": Command(
        "Every workload and size: parameters, target, step hint, budget.",
        "algoperf-avg list [--options]", ("options",),
        ("algoperf-avg list", "algoperf-avg list --options")),
    "new-submission": Command(
        "Write a commented, runnable submission template.",
        "algoperf-avg new-submission NAME [--out=PATH]", ("out",),
        ("algoperf-avg new-submission my_optimizer",)),
    "score": Command(
        "Time to target, performance profiles and benchmark score of a folder of logs.",
        "algoperf-avg score EXP_DIR|ARCHIVE.tar.xz/PATH [...]", _SCORING,
        ("algoperf-avg score experiments/benchmark --reference=nadamw --steps",
         "algoperf-avg score algoperf_leaderboard_logs.tar.xz/algoperf_v06/logs/"
         "external_tuning")),
    "plot": Command(
        "Performance profiles, validation curves and speedups as PNG + CSV.",
        "algoperf-avg plot EXP_DIR --out=DIR [...]", _SCORING,
        ("algoperf-avg plot experiments/benchmark --out=plots",)),
    "posthoc": Command(
        "Average a run's saved snapshots for a grid of LAWA / EMA / SWA settings, or "
        "synthesise power EMAs of any width from its powerema snapshots.",
        "algoperf-avg posthoc TRIAL_DIR --lawa=EVERY:WINDOW --ema=EVERY:DECAY "
        "--swa=EVERY:START [...] | --ema_sigma_rel=S,... --ema_gamma=G,...",
        ("lawa", "ema", "swa", "ema_sigma_rel", "ema_gamma", "bn_policy", "out", "data_dir"),
        ("algoperf-avg posthoc exp/study_0/ogbg_small_jax/trial_1 --lawa=64:20,128:10 "
         "--ema=8:0.99 --out=exp/posthoc",
         "algoperf-avg run --submission=nadamw "
         "--posthoc_grid=powerema:50:6.94,powerema:50:16.97 --experiment_dir=exp",
         "algoperf-avg posthoc exp/study_0/ogbg_small_jax/trial_1 "
         "--ema_sigma_rel=0.05,0.07,0.1,0.15,0.2 --out=exp/posthoc")),
    "setup-data": Command(
        "Prepare a full-size dataset under the data root.",
        "algoperf-avg setup-data WORKLOAD --data_dir=DATA [--manual_dir=DIR] [--raw_dir=DIR]",
        ("data_dir", "manual_dir", "raw_dir"),
        ("algoperf-avg setup-data ogbg --data_dir=DATA",
         "algoperf-avg setup-data imagenet --data_dir=DATA --manual_dir=ARCHIVES")),
}


def our_flags(module_name: str) -> set[str]:
  """The flags the CLI module defines (not absl's own)."""
  return {f.name for f in flags.FLAGS.get_flags_for_module(module_name)}


def misplaced(command: str, module_name: str) -> list[str]:
  """Flags given on the command line that ``command`` does not use."""
  allowed = set(COMMANDS[command].flags)
  return sorted(name for name in our_flags(module_name)
                if flags.FLAGS[name].present and name not in allowed)


def _metavar(flag: flags.Flag) -> str:
  kind = flag.flag_type()
  if kind == "bool":
    return ""
  values = getattr(flag.parser, "enum_values", None)
  if values:
    return "={" + "|".join(values) + "}"
  if "list" in kind:
    return "=A,B,..."
  return {"int": "=N", "float": "=X", "multi string": "=VALUE (repeatable)"}.get(
      kind, "=VALUE")


def overview() -> str:
  """``algoperf-avg --help``."""
  width = max(map(len, COMMANDS))
  lines = ["usage: algoperf-avg COMMAND [ARGS] [--FLAGS]", "", "commands:"]
  lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
  lines += ["", "algoperf-avg COMMAND --help shows a command's flags and examples."]
  return "\n".join(lines)


def command_help(command: str) -> str:
  """``algoperf-avg COMMAND --help``: usage, flags with defaults, examples."""
  spec = COMMANDS[command]
  lines = [f"usage: {spec.usage}", "", spec.summary, "", "flags:"]
  for name in spec.flags:
    flag = flags.FLAGS[name]
    default = "" if flag.default in (None, [], "") else f" (default: {flag.default_as_str})"
    kind = _metavar(flag)
    lines.append(f"  --{name}{kind}{default}")
    lines.append(f"      {flag.help}")
  lines += ["", "examples:"] + [f"  {e}" for e in spec.examples]
  return "\n".join(lines)
