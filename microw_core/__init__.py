"""microw: explain and steer language models with sparse autoencoders and named concepts."""

from .errors import MicrowError
from .model import Generation, LanguageModel, generate, load_model

__version__ = "0.1.0"
__all__ = ["Generation", "LanguageModel", "MicrowError", "generate", "load_model"]
