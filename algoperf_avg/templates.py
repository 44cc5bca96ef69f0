"""`algoperf-avg new-submission NAME`: a commented, runnable submission file."""

from __future__ import annotations

import keyword
import os

from algoperf_avg import spec
from algoperf_avg.training import logs

TEMPLATE = '''"""{name}: a new submission (edit me).

Run it:  algoperf-avg run --workload=ogbg --size=small --submission={path}

This uses the optax-native shortcut: the harness builds the jitted train step
(loss = summed loss / valid examples, grads, ``tx.update``, apply) and the eval
from ``make_optimizer``. For full control, define AlgoPerf's five functions
(get_batch_size, init_optimizer_state, update_params, prepare_for_eval,
data_selection) instead; see submissions/ for examples.
"""

import optax

from algoperf_avg import averaging

from algoperf_avg.training import optimizers, schedules

# Every hyperparameter this submission reads. Trials (search-space JSON) may
# only set these; the workload's reference NadamW values fill the rest, so the
# file runs as-is.
HPARAMS = (
    "learning_rate", "one_minus_beta1", "beta2", "weight_decay", "warmup_factor",
    "label_smoothing", "dropout_rate", "grad_clip", "ema_decay",
)

# Defaults for the knobs the workload's reference hyperparameters lack.
DEFAULT_HPARAMS = {{"ema_decay": 0.99}}


def get_batch_size(workload_id):
  """Batch size per workload id (e.g. "ogbg_small"); None = workload default."""
  return None


def make_optimizer(hparams, workload, step_hint):
  """Return an optax.GradientTransformation; hparams read like a dict.

  ``step_hint`` is the workload's step budget hint: schedules end there.
  """
  schedule = schedules.warmup_cosine(
      hparams["learning_rate"], step_hint, hparams["warmup_factor"]
  )
  return optax.chain(
      optimizers.nadamw(
          schedule,
          b1=1.0 - hparams["one_minus_beta1"],
          b2=hparams["beta2"],
          weight_decay=hparams["weight_decay"],
      ),
      # Weight averaging is one more link; eval then uses the averaged
      # weights automatically (see eval_params below). Remove to train plain.
      averaging.ema(decay=hparams["ema_decay"], every=1),
  )


def eval_params(opt_state, params):
  """Weights to evaluate (default shown: the average kept by the chain)."""
  return averaging.averaged_params(opt_state, params)
'''


def write_submission_template(name: str, out: str | None = None) -> str:
  """Write the template for submission ``name``; never overwrite a file.

  Default path: ``submissions/NAME.py`` when ./submissions exists, else ``NAME.py``.
  """
  if not name.isidentifier() or keyword.iskeyword(name):
    raise spec.UsageError(f"submission name {name!r} must be a Python identifier")
  if out is None:
    out = os.path.join("submissions", f"{name}.py") if os.path.isdir("submissions") else f"{name}.py"
  if os.path.exists(out):
    raise spec.UsageError(f"{out} already exists; choose another name or --out")
  logs.atomic_write_text(out, TEMPLATE.format(name=name, path=out))
  return out
