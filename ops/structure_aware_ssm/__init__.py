"""The whole structure-aware SSM step: scan, state fusion, observation.

    x = selective_scan(u, delta, A, B)          # states, (batch, D, N, H*W)
    h = state_fusion(x)                         # per state index n
    y = sum_n C[n] * h[n] + Dskip * u

Shapes: u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip (D,);
kernels (3, D, 3, 3); alpha (3,); delta_bias (D,); y (batch, D, H, W) float32.

``reference.py`` (:func:`structure_aware_ssm_ref`, the composition of the
references), ``torch_backend.py`` and ``triton_backend.py`` (the three steps in
one op, imported only when chosen) and ``export.py`` (the form ONNX holds);
:func:`structure_aware_ssm` runs the backend ``ops._backend`` chooses.
"""
from .._backend import implementation
from .reference import structure_aware_ssm_ref


def structure_aware_ssm(u, delta, A, B, C, Dskip, kernels, alpha,
                        delta_bias=None, delta_softplus=True, *, backend=None):
    """The fused SSM step on the chosen backend; see :func:`structure_aware_ssm_ref`.

    ``backend``: ``'triton'``, ``'torch'``, ``'export'`` (the form ONNX holds,
    chosen by itself while ``torch.onnx.export`` traces) or None (automatic, see
    ``ops._backend``).
    """
    run = implementation('structure_aware_ssm', backend, u.device)
    return run(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias, delta_softplus)


__all__ = ['structure_aware_ssm', 'structure_aware_ssm_ref']
