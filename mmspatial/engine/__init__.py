"""Training-time additions to mmengine; importing this package registers them."""
from .hooks import RandomStateHook

__all__ = ['RandomStateHook']
