"""Workload options and per-size configs."""

from __future__ import annotations

import pytest

from algoperf_avg import registry, spec
from algoperf_avg.kit import config, param_types
from workloads.ogbg.workload import OgbgWorkload


def test_options_default_parse_and_reject_unknown_names():
  declared = {"vocab_size": config.Option(32_000, "vocabulary size", int),
              "tokenizer": config.Option(None, "tokenizer path")}
  values = config.resolve_options("wmt", declared, {"vocab_size": "1024"})
  assert values["vocab_size"] == 1024 and values["tokenizer"] is None
  assert values["eval_batch_size"] is None  # every workload has it
  with pytest.raises(ValueError, match=r"no option 'vocab_sise' \(did you mean 'vocab_size'"):
    config.resolve_options("wmt", declared, {"vocab_sise": "1"})
  with pytest.raises(ValueError, match="bad value 'many' for option vocab_size"):
    config.resolve_options("wmt", declared, {"vocab_size": "many"})
  with pytest.raises(ValueError, match="positive integer"):
    config.resolve_options("wmt", declared, {"eval_batch_size": "0"})


def test_parse_assignments():
  assert config.parse_assignments(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
  with pytest.raises(ValueError, match="NAME=VALUE"):
    config.parse_assignments(["novalue"])
  with pytest.raises(ValueError, match="given twice"):
    config.parse_assignments(["a=1", "a=2"])
  assert config.parse_bool("Yes") is True and config.parse_bool("0") is False


def test_workload_options_through_the_registry():
  workload = registry.get_workload("ogbg", "small", eval_batch_size="64")
  assert workload.eval_batch_size == 64
  assert registry.get_workload("ogbg", "small").eval_batch_size == 1024
  with pytest.raises(spec.UsageError, match="no option 'colour'"):
    registry.get_workload("ogbg", "small", colour="red")


def test_config_drives_the_base_class_properties():
  workload = OgbgWorkload("full")
  assert workload.num_train_examples == 350_343
  assert workload.default_batch_size == 512
  assert workload.reference_hparams["learning_rate"] == pytest.approx(0.0017486387539)
  workload.reference_hparams["learning_rate"] = 1.0  # a copy: the config is frozen
  assert workload.reference_hparams["learning_rate"] != 1.0


def test_parameter_types_follow_algoperfs_rules():
  # Checked against AlgoPerf's param_utils.jax_param_types (commit 2c90454f) on
  # this tree and on full OGBG's 66 leaves (same type for every leaf; AlgoPerf
  # lower-cases the keys of its result, ours keeps the params' structure).
  tree = {"Conv_0": {"kernel": 0, "bias": 0}, "BatchNorm_0": {"scale": 0, "bias": 0},
          "LayerNorm_1": {"scale": 0, "bias": 0}, "Embed_0": {"embedding": 0},
          "token_embedding": {"kernel": 0},
          "MultiHeadDotProductAttention_0": {"query": {"kernel": 0, "bias": 0},
                                             "key": {"kernel": 0}, "value": {"kernel": 0},
                                             "out": {"kernel": 0}},
          "encoder": {"ConvolutionBlock_0": {"kernel": 0}, "lnorm": {"scale": 0}},
          "subnet": {"scale": 0}, "Dense_0": {"kernel": 0, "bias": 0},
          "SelfAttention": {"query_scale": 0, "in_proj_weight": 0}}
  t = param_types.parameter_types(tree)
  P = spec.ParameterType
  assert t["Conv_0"] == {"kernel": P.CONV_WEIGHT, "bias": P.BIAS}
  assert t["BatchNorm_0"] == {"scale": P.BATCH_NORM_SCALE, "bias": P.BATCH_NORM_BIAS}
  assert t["LayerNorm_1"] == {"scale": P.LAYER_NORM_SCALE, "bias": P.LAYER_NORM_BIAS}
  assert t["Embed_0"]["embedding"] == t["token_embedding"]["kernel"] == P.EMBEDDING
  attention = t["MultiHeadDotProductAttention_0"]
  assert (attention["query"]["kernel"], attention["query"]["bias"], attention["key"]["kernel"],
          attention["value"]["kernel"], attention["out"]["kernel"]) == (
              P.ATTENTION_Q, P.ATTENTION_BIAS, P.ATTENTION_K, P.ATTENTION_V, P.ATTENTION_OUT)
  assert t["encoder"]["ConvolutionBlock_0"]["kernel"] == P.CONV_WEIGHT
  assert t["encoder"]["lnorm"]["scale"] == P.LAYER_NORM_SCALE  # "ln" substring
  assert t["subnet"]["scale"] == P.BATCH_NORM_SCALE  # "bn" substring, as AlgoPerf
  assert t["Dense_0"] == {"kernel": P.WEIGHT, "bias": P.BIAS}
  assert t["SelfAttention"] == {"query_scale": P.WEIGHT, "in_proj_weight": P.ATTENTION_QKV}
  with pytest.raises(ValueError, match="unrecognised batch norm parameter"):
    param_types.parameter_types({"bn": {"mean": 0}})


def test_parameter_types_are_computed_once():
  workload = OgbgWorkload("small")
  first = workload.model_params_types
  assert workload.model_params_types is first
  types = set(param_types.jax.tree.leaves(first))
  assert types == {spec.ParameterType.WEIGHT, spec.ParameterType.BIAS,
                   spec.ParameterType.LAYER_NORM_SCALE, spec.ParameterType.LAYER_NORM_BIAS,
                   spec.ParameterType.EMBEDDING}  # node_embedding/edge_embedding kernels
