"""Running this project's models on your own images."""
from .inferencers import build_inferencer

__all__ = ['build_inferencer']
