"""Targets and budgets of every workload, in one table.

The scorer reads this table to decide whether a logged run reached its target;
each `Workload` reads its own row, so the two can never disagree. Keys are
workload ids as they appear in log folders (``<id>_<framework>``): AlgoPerf's
names for the full-size workloads and their held-out variants, and
``<name>_small`` for this project's CPU-scale variants.

Every AlgoPerf number is taken from the workload classes of
mlcommons/algorithmic-efficiency (``algoperf/workloads/*/workload.py`` and the
variant classes in ``*_jax/workload.py``, commit 2c90454f). Those are the
v0.6 numbers. The v0.5 competition (2024) used the same targets but longer
runtime budgets (and other step hints); `MAX_RUNTIME_SEC_V05` keeps those
budgets for scoring the v0.5 logs. Variants share their base workload's
budget, step hint and eval period.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Targets:
  """Target and budget of one workload (AlgoPerf's numbers for full sizes)."""

  metric: str  # e.g. "mean_average_precision"; logged as validation/<metric>
  direction: str  # "max" or "min"
  validation: float
  test: float | None
  max_runtime_sec: float
  step_hint: int
  eval_period_sec: float
  # The base workload of a held-out variant ("ogbg" for "ogbg_gelu"); None for
  # a base workload. The v0.5 held-out rule pairs each variant with its base.
  base_workload: str | None = None
  # Small sizes: a budget in steps, evaluated every `eval_every_steps`, so a
  # run gives the same numbers on any machine, loaded or not (wall time is
  # still logged and scored); max_runtime_sec is then inf.
  step_budget: int | None = None
  eval_every_steps: int | None = None

  def reached(self, value: float | None, split: str = "validation") -> bool:
    """Whether ``value`` of the target metric meets the ``split`` target.

    The one definition, used by the runner and the scorer: at or beyond the
    target (``>=`` to maximize, ``<=`` to minimize), as AlgoPerf's scorer
    counts it (AlgoPerf's runner stops on strict ``>``/``<``; the two differ
    only on exact equality). None and NaN never reach.
    """
    target = self.validation if split == "validation" else self.test
    if value is None or target is None or not math.isfinite(value):
      return False
    return value >= target if self.direction == "max" else value <= target


def _family(
    metric: str,
    direction: str,
    max_runtime_sec: float,
    step_hint: int,
    eval_period_sec: float,
    base: str,
    targets: dict[str, tuple[float, float]],
) -> dict[str, Targets]:
  """Rows of one base workload and its variants (same budget, hint, period)."""
  rows = {}
  for workload_id, (validation, test) in targets.items():
    rows[workload_id] = Targets(
        metric=metric,
        direction=direction,
        validation=validation,
        test=test,
        max_runtime_sec=max_runtime_sec,
        step_hint=step_hint,
        eval_period_sec=eval_period_sec,
        base_workload=None if workload_id == base else base,
    )
  return rows


def _small(metric: str, direction: str, validation: float, test: float, *,
           steps: int, eval_every: int) -> Targets:
  """A CPU-scale variant's row: a budget of ``steps`` (also the step hint),
  an eval every ``eval_every`` steps, no time limit."""
  return Targets(metric=metric, direction=direction, validation=validation, test=test,
                 max_runtime_sec=math.inf, step_hint=steps, eval_period_sec=10,
                 step_budget=steps, eval_every_steps=eval_every)


TARGETS: dict[str, Targets] = {
    # AlgoPerf ogbg_molpcba:0.1.3 GNN (algoperf/workloads/ogbg).
    "ogbg": Targets(
        metric="mean_average_precision",
        direction="max",
        validation=0.28098,
        test=0.268729,
        max_runtime_sec=12_011,
        step_hint=52_000,
        eval_period_sec=240,
    ),
    # CPU-scale variant on generated molecule-like graphs: one pass of fresh
    # graphs per run, labels drawn from planted noisy assays on every split.
    # Budget in steps, evals every 100 steps. Calibrated by the rule
    # (results/calibration/ogbg_small*.csv): cosine first reaches 0.777 at
    # 69% / 75% / 69% of step_hint (seeds 0-2), the constant-LR run peaks at
    # 0.7672. The test target is met by every cosine seed when it first meets
    # the validation one (test mAP then >= 0.7797).
    "ogbg_small": _small(
        "mean_average_precision", "max", 0.777, 0.779, steps=3_200, eval_every=100),
    # CPU-scale variant on generated click logs in the real TSV format. Budget
    # in steps. Calibrated by the rule (results/calibration/criteo1tb_small*.csv):
    # cosine first reaches 0.0830 at 80% / 75% / 85% of step_hint (seeds 0-2),
    # the constant-LR run bottoms out at 0.0855. The test target is met by
    # every cosine seed when it first meets the validation one.
    "criteo1tb_small": _small(
        "loss", "min", 0.0830, 0.0770, steps=2_000, eval_every=100),
    # CPU-scale ViT on generated 32 px shapes and textures; budget in steps.
    # Calibrated by the rule (results/calibration/imagenet_vit_small*.csv):
    # cosine first reaches 0.766 at 80% / 80% / 70% of step_hint (seeds 0-2),
    # the constant-LR run peaks at 0.7446. The test target is met by every
    # cosine seed when it first meets the validation one.
    "imagenet_vit_small": _small(
        "accuracy", "max", 0.766, 0.63, steps=2_000, eval_every=100),
    # CPU-scale ResNet (four blocks, 16 filters, batch norm) on the same
    # generated 32 px images as imagenet_vit_small; budget in steps.
    # Calibrated by the rule (results/calibration/imagenet_resnet_small*.csv):
    # cosine first reaches 0.835 at 75% / 75% / 70% of step_hint (seeds 0-2,
    # 2 devices; 90% for seed 0 on 1 device), the constant-LR run peaks at
    # 0.8286. The test target is met by every cosine seed when it first meets
    # the validation one.
    "imagenet_resnet_small": _small(
        "accuracy", "max", 0.835, 0.76, steps=2_000, eval_every=100),
    # CPU-scale variant on generated knee-like phantoms (32 x 32, real-format
    # h5 files). Budget in steps, evals every 50. Calibrated by the rule
    # (results/calibration/fastmri_small*.csv): cosine first reaches 0.853 at
    # 85% / 70% / 80% of step_hint (seeds 0-2), the constant-LR run peaks at
    # 0.8439. The test target is met by every cosine seed when it first meets
    # the validation one.
    "fastmri_small": _small(
        "ssim", "max", 0.853, 0.858, steps=1_000, eval_every=50),
    # CPU-scale Conformer on eSpeak NG synthesised words (kit.speech_synthetic,
    # generator 2). Budget in steps, evals every 100 steps. Calibrated by the
    # rule (results/calibration/librispeech_conformer_small*.csv): cosine first
    # reaches WER 0.026 at 87% / 67% / 73% of step_hint (seeds 0-2), the
    # constant-LR run's best is 0.1028; test WER then <= 0.0328.
    "librispeech_conformer_small": _small(
        "wer", "min", 0.026, 0.033, steps=1_500, eval_every=100),
    # CPU-scale DeepSpeech (width 128, 2 BiLSTM + 1 feed-forward layer) on the
    # Conformer-small's synthesised words (generator 2). Budget in steps, evals
    # every 100 steps. Calibrated by the rule (results/calibration/
    # librispeech_deepspeech_small*.csv): cosine first reaches WER 0.0023 (at
    # most 2 of the 905 validation words wrong) at 60% / 73% / 80% of
    # step_hint (seeds 0-2), the constant-LR run's best is 0.0066; test WER
    # then <= 0.00546.
    "librispeech_deepspeech_small": _small(
        "wer", "min", 0.0023, 0.0055, steps=1_500, eval_every=100),
    # CPU-scale variant on a generated language pair. Budget in steps, evals
    # every 80 steps. Calibrated by the rule (results/calibration/wmt_small*.csv):
    # cosine first reaches 94.0 BLEU at 70% / 80% / 70% of step_hint (seeds
    # 0-2), the constant-LR run peaks at 92.7. The test target is met by every
    # cosine seed when it first meets the validation one.
    "wmt_small": _small(
        "bleu", "max", 94.0, 92.0, steps=800, eval_every=80),
}

# (validation target, test target) per workload id of one family.
TARGETS.update(
    _family("loss", "min", 7_703, 10_666, 120, "criteo1tb", {
        "criteo1tb": (0.123735, 0.126041),
        "criteo1tb_layernorm": (0.123757, 0.126152),
        "criteo1tb_resnet": (0.12415, 0.12648),
        "criteo1tb_embed_init": (0.129657, 0.131967),
    }))
TARGETS.update(
    _family("ssim", "max", 4_430, 18_094, 80, "fastmri", {
        "fastmri": (0.723653, 0.740633),
        "fastmri_model_size": (0.723559, 0.740726),
        "fastmri_tanh": (0.717840, 0.734505),
        "fastmri_layernorm": (0.723284, 0.739996),
    }))
TARGETS.update(
    _family("accuracy", "max", 66_159, 195_999, 510, "imagenet_resnet", {
        "imagenet_resnet": (1 - 0.22569, 1 - 0.3440),
        "imagenet_resnet_silu": (0.75445, 0.6323),
        "imagenet_resnet_gelu": (0.76765, 0.6519),
        "imagenet_resnet_large_bn_init": (0.76526, 0.6423),
    }))
TARGETS.update(
    _family("accuracy", "max", 69_768, 167_999, 420, "imagenet_vit", {
        "imagenet_vit": (1 - 0.22691, 1 - 0.3481),
        "imagenet_vit_glu": (0.75738, 0.6359),
        "imagenet_vit_post_ln": (0.75312, 0.6286),
        "imagenet_vit_map": (0.77113, 0.6523),
    }))
TARGETS.update(
    _family("wer", "min", 58_015, 76_000, 1_440, "librispeech_conformer", {
        "librispeech_conformer": (0.085884, 0.052981),
        "librispeech_conformer_attention_temperature": (0.109977, 0.068065),
        "librispeech_conformer_layernorm": (0.09731, 0.05996),
        "librispeech_conformer_gelu": (0.094114, 0.056629),
    }))
TARGETS.update(
    _family("wer", "min", 44_405, 38_400, 1_440, "librispeech_deepspeech", {
        "librispeech_deepspeech": (0.119936, 0.074143),
        "librispeech_deepspeech_tanh": (0.150883, 0.098613),
        "librispeech_deepspeech_no_resnet": (0.131564, 0.079297),
        "librispeech_deepspeech_norm_and_spec_aug": (0.14342, 0.090976),
    }))
# The "ogbg" base row is the one written out above.
TARGETS.update(
    _family("mean_average_precision", "max", 12_011, 52_000, 240, "ogbg", {
        "ogbg_gelu": (0.27771, 0.262926),
        "ogbg_silu": (0.282178, 0.272144),
        "ogbg_model_size": (0.269446, 0.253051),
    }))
TARGETS.update(
    _family("bleu", "max", 43_336, 120_000, 840, "wmt", {
        "wmt": (30.8491, 30.7219),
        "wmt_post_ln": (30.0779, 29.8982),
        "wmt_attention_temp": (29.3379, 29.4143),
        "wmt_glu_tanh": (29.5779, 29.0515),
    }))

# AlgoPerf's eight base workloads, in its order.
ALGOPERF_BASE_WORKLOADS: tuple[str, ...] = (
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "ogbg",
    "wmt",
)

# Runtime budgets of the v0.5 competition (before AlgoPerf commit 03bc79e4,
# 2025-02-03, "Update max allowed runtimes for each workload"); per base
# workload, variants use their base's budget.
MAX_RUNTIME_SEC_V05: dict[str, float] = {
    "criteo1tb": 7_703,
    "fastmri": 8_859,
    "imagenet_resnet": 63_008,
    "imagenet_vit": 77_520,
    "librispeech_conformer": 61_068,
    "librispeech_deepspeech": 55_506,
    "ogbg": 18_477,
    "wmt": 48_151,
}

# The held-out variants drawn for the v0.5 competition, one per base workload
# that had a draw (AlgoPerf scoring/algoperf_v05/held_out_workloads_algoperf_v05.json).
HELD_OUT_WORKLOADS_V05: tuple[str, ...] = (
    "librispeech_conformer_layernorm",
    "imagenet_resnet_large_bn_init",
    "ogbg_model_size",
    "wmt_glu_tanh",
    "fastmri_tanh",
    "criteo1tb_embed_init",
)


def base_of(workload_id: str) -> str:
  """The base workload of ``workload_id`` (itself when it is a base)."""
  return get(workload_id).base_workload or workload_id


def get(workload_id: str) -> Targets:
  """The row of ``workload_id``; raises KeyError naming the known ids."""
  try:
    return TARGETS[workload_id]
  except KeyError:
    raise KeyError(
        f"no targets for workload {workload_id!r}; known: {', '.join(sorted(TARGETS))}"
    ) from None
