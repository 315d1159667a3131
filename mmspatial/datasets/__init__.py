"""Data sets that ship with mmspatial: a synthetic one for the demo and tests.

The names are imported from :mod:`.synthetic` on first use, so that
``python -m mmspatial.datasets.synthetic`` runs that module once, as
``__main__``, without runpy's warning about a module imported twice.
"""
__all__ = [
    'SHAPE_CLASSES', 'SHAPE_PALETTE', 'SEG_CLASSES', 'SEG_PALETTE',
    'generate_synthetic_coco', 'generate_synthetic_seg'
]


def __getattr__(name):
    if name in __all__:
        from . import synthetic
        return getattr(synthetic, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
