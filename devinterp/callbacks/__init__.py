"""Measurements at checkpoint steps, live during training or post hoc over saved checkpoints.
Every callback is built from its config's `_target_`, `devinterp.callbacks.<Name>Callback`."""
from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, Schedule, derive_seed
from devinterp.callbacks.grads import GradsCallback
from devinterp.callbacks.hessian import HessianCallback
from devinterp.callbacks.induction import InductionCallback
from devinterp.callbacks.llc import LLCCallback
from devinterp.callbacks.loss import LossCallback
from devinterp.callbacks.ngram import NgramCallback
from devinterp.callbacks.custom_loss import CustomLossModel, with_loss
from devinterp.callbacks.presets import callbacks_config
from devinterp.callbacks.runner import CallbackRunner, RunData, applicable, build_callbacks, training_sample
from devinterp.callbacks.weights import WeightsCallback

__all__ = ["Callback", "CallbackContext", "CallbackOutput", "Schedule", "derive_seed", "CallbackRunner",
           "RunData", "applicable", "build_callbacks", "callbacks_config", "training_sample", "CustomLossModel",
           "with_loss", "GradsCallback", "HessianCallback", "InductionCallback", "LLCCallback", "LossCallback",
           "NgramCallback", "WeightsCallback"]
