"""Models built from configs (never downloaded): one module per model, with its config (see `base`)."""
from devinterp.models.attention_only import (AttnImpl, AttnOnlyConfig, AttnOnlyModelConfig, AttnOnlyTransformer,
                                             head_parameter_masks)
from devinterp.models.base import ModelConfig, build_model, count_parameters, model_schemas
from devinterp.models.gpt2 import GPT2ModelConfig

__all__ = ["AttnImpl", "AttnOnlyConfig", "AttnOnlyModelConfig", "AttnOnlyTransformer", "head_parameter_masks",
           "ModelConfig", "build_model", "count_parameters", "model_schemas", "GPT2ModelConfig"]
