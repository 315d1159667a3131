"""Training-time additions to mmengine: importing this package registers the
hooks; ``work_dir_lock`` keeps one training per work dir."""
from .hooks import AtomicCheckpointHook, RandomStateHook

__all__ = ['AtomicCheckpointHook', 'RandomStateHook']
