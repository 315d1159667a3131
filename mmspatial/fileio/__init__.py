"""Files the package writes and reads: crash-safe writes."""
from .atomic import atomic_write, atomic_write_text, atomic_torch_save

__all__ = ['atomic_write', 'atomic_write_text', 'atomic_torch_save']
