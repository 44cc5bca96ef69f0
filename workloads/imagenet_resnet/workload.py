"""ImageNet ResNet: image classification with a batch-normalised ResNet.

``full`` is AlgoPerf's ``imagenet_resnet`` workload: ResNet-50 v1.5
(25,557,032 parameters, 53,120 batch statistics) on ImageNet 2012 at 224 px
with random-resized crops and flips, tested on ImageNet-v2, with its
targets, budget and eval batch size. ``small`` trains a four-block ResNet
(16 filters) on generated 32 px shapes-and-textures images through the same
input code. Batch statistics are the model state, so a trial's
``bn_policy`` applies to averaged weights. Data, loss and evaluation are
shared with ``imagenet_vit`` (`algoperf_avg.kit.imagenet_workload`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from algoperf_avg import spec
from algoperf_avg.kit import imagenet, imagenet_workload
from workloads.imagenet_resnet import model


@dataclasses.dataclass(frozen=True)
class ResnetConfig(imagenet_workload.ImagenetConfig):
  """The model fields of one ResNet size (defaults: ResNet-50)."""

  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  num_filters: int = 64


FULL = ResnetConfig(
    **vars(imagenet_workload.full_config(
        eval_batch_size=1024, train_batch_size=1024,
        # AlgoPerf's NadamW baseline, trial 1 of its external-tuning search
        # space (as for imagenet_vit).
        reference_hparams={
            "learning_rate": 0.001308209823469072,
            "one_minus_beta1": 0.02686663061,
            "beta2": 0.9981232922116359,
            "weight_decay": 0.16375311233774334,
            "warmup_factor": 0.1,
            "label_smoothing": 0.1,
            "dropout_rate": 0.0,
            "grad_clip": None,
        })))

SMALL_DATA = imagenet_workload.SMALL_DATA
SMALL = ResnetConfig(
    **vars(imagenet_workload.small_config(
        SMALL_DATA, eval_batch_size=1024, train_batch_size=64,
        reference_hparams={
            "learning_rate": 0.004,
            "one_minus_beta1": 0.1,
            "beta2": 0.999,
            "weight_decay": 0.05,
            "warmup_factor": 0.05,
            "label_smoothing": 0.1,
            "dropout_rate": 0.0,
            "grad_clip": None,
        },
        augmentation={"area_range": (0.3, 1.0)})),
    stage_sizes=(1, 1, 1, 1), num_filters=16)


class ImagenetResnetWorkload(imagenet_workload.ImagenetWorkload):
  """ResNet-50 on ImageNet (``full``) and a small ResNet on generated images."""

  name = "imagenet_resnet"
  configs = {"full": FULL, "small": SMALL}
  preprocessing = imagenet.RESNET_PREPROCESSING
  output_params_key = "Dense_0"
  batch_norm_momentum = model.BN_MOMENTUM

  def __init__(self, size: str = "full", **options):
    super().__init__(size, **options)
    c = self.config
    self._model = model.ResNet(num_classes=c.num_classes, stage_sizes=c.stage_sizes,
                               num_filters=c.num_filters)

  def init_model_fn(self, rng: jax.Array) -> tuple[spec.Params, spec.ModelState]:
    """Parameters and batch statistics from one all-ones image (AlgoPerf's init)."""
    size = self.config.image_size
    variables = self._model.init({"params": rng}, jnp.ones((1, size, size, 3)))
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def model_fn(
      self,
      params: spec.Params,
      batch: spec.Batch,
      model_state: spec.ModelState,
      mode: spec.ForwardPassMode,
      rng: jax.Array,
      update_batch_norm: bool,
      dropout_rate: float | None = None,
  ) -> tuple[jax.Array, spec.ModelState]:
    """Logits ``(B, classes)``; with ``update_batch_norm``, batch statistics too."""
    del mode, rng, dropout_rate  # no dropout
    variables = {"params": params, **model_state}
    if update_batch_norm:
      logits, new_state = self._model.apply(
          variables, batch["inputs"], update_batch_norm=True, mutable=["batch_stats"])
      return logits, dict(new_state)
    logits = self._model.apply(variables, batch["inputs"], update_batch_norm=False)
    return logits, model_state
