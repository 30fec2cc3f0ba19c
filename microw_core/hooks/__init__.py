"""The hooks system: detectors observe activations, controllers change them."""

from .base import Controller, Detector, Hook, HookContext, StopForward
from .controllers import AddVector, ClampDirection, FunctionController, ScaleDirection, ZeroDirection
from .detectors import ActivationRecorder, InputRecorder, OutputRecorder
from .manager import HookHandle, HookSet, attach

__all__ = [
    "ActivationRecorder", "AddVector", "ClampDirection", "Controller", "Detector", "FunctionController", "Hook",
    "HookContext", "HookHandle", "HookSet", "InputRecorder", "OutputRecorder", "ScaleDirection", "StopForward",
    "ZeroDirection", "attach",
]
