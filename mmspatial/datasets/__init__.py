"""Data sets that ship with mmspatial: a synthetic one for the demo and tests."""
from .synthetic import (SEG_CLASSES, SEG_PALETTE, SHAPE_CLASSES, SHAPE_PALETTE,
                        generate_synthetic_coco, generate_synthetic_seg)

__all__ = [
    'SHAPE_CLASSES', 'SHAPE_PALETTE', 'SEG_CLASSES', 'SEG_PALETTE',
    'generate_synthetic_coco', 'generate_synthetic_seg'
]
