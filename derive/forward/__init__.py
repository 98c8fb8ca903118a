"""The input of the pipeline: a normalization's forward graph (:mod:`.graph`), its layout
(:mod:`.layout`), the library of entries and the extra claims they may ask to prove."""
from .layout import Facades, Input, Spec

__all__ = ["Facades", "Input", "Spec"]
