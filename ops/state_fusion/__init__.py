"""Structure-aware state fusion (SASF): three dilated depthwise 3x3 stencils.

    h = alpha[0] * dw3x3_dil1(x) + alpha[1] * dw3x3_dil3(x) + alpha[2] * dw3x3_dil5(x)

Shapes: x (batch, D, H, W); kernels (3, D, 3, 3), one per dilation of
:data:`DILATIONS`; alpha (3,); output (batch, D, H, W).

``reference.py`` (:func:`state_fusion_ref`, the specification),
``torch_backend.py`` (channels-last convolutions) and ``triton_backend.py``
(one 25-offset stencil kernel, imported only when chosen); :func:`state_fusion`
runs the backend ``ops._backend`` chooses.
"""
from .._backend import implementation
from .reference import DILATIONS, state_fusion_ref


def state_fusion(x, kernels, alpha, *, backend=None):
    """State fusion on the chosen backend; see :func:`state_fusion_ref`.

    ``backend``: ``'triton'``, ``'torch'`` or ``None`` (automatic, see ``ops._backend``).
    """
    return implementation('state_fusion', backend, x.device)(x, kernels, alpha)


__all__ = ['DILATIONS', 'state_fusion', 'state_fusion_ref']
