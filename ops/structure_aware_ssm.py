"""The whole structure-aware SSM step: scan, state fusion, observation.

    x = selective_scan(u, delta, A, B)          # states, (batch, D, N, H*W)
    h = state_fusion(x)                         # per state index n
    y = sum_n C[n] * h[n] + Dskip * u

Shapes: u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip (D,);
kernels (3, D, 3, 3); alpha (3,); delta_bias (D,); y (batch, D, H, W) float32.
"""
from ._backend import resolve_backend
from .selective_scan import selective_scan_ref
from .state_fusion import state_fusion_ref


def _check_ssm_args(u, delta, A, B, C, Dskip):
    if u.dim() != 4:
        raise ValueError(f'structure_aware_ssm: u must be (batch, D, H, W), '
                         f'got {tuple(u.shape)}')
    batch, channels, height, width = u.shape
    state_dim = A.shape[-1]
    expected = {'delta': (tuple(delta.shape), (batch, channels, height, width)),
                'A': (tuple(A.shape), (channels, state_dim)),
                'B': (tuple(B.shape), (batch, state_dim, height, width)),
                'C': (tuple(C.shape), (batch, state_dim, height, width)),
                'Dskip': (tuple(Dskip.shape), (channels,))}
    for name, (got, want) in expected.items():
        if got != want:
            raise ValueError(f'structure_aware_ssm: {name} must be {want} for u of '
                             f'shape {tuple(u.shape)}, got {got}')


def structure_aware_ssm_ref(u, delta, A, B, C, Dskip, kernels, alpha,
                            delta_bias=None, delta_softplus=True):
    """Reference composition of the three steps, in float32."""
    _check_ssm_args(u, delta, A, B, C, Dskip)
    batch, channels, height, width = u.shape
    state_dim = A.shape[-1]
    states = selective_scan_ref(u.flatten(2), delta.flatten(2), A, B.flatten(2),
                                delta_bias, delta_softplus)
    fused = state_fusion_ref(
        states.reshape(batch, channels * state_dim, height, width),
        kernels.repeat_interleave(state_dim, dim=1), alpha)
    fused = fused.view(batch, channels, state_dim, height, width)
    y = (fused * C.float()[:, None]).sum(dim=2)
    return y + Dskip.float()[None, :, None, None] * u.float()


def structure_aware_ssm(u, delta, A, B, C, Dskip, kernels, alpha,
                        delta_bias=None, delta_softplus=True, *, backend=None):
    """The fused SSM step, dispatched to the chosen backend.

    See :func:`structure_aware_ssm_ref` for the definition.
    """
    _check_ssm_args(u, delta, A, B, C, Dskip)
    backend = resolve_backend('structure_aware_ssm', backend, u.device)
    return structure_aware_ssm_ref(u, delta, A, B, C, Dskip, kernels, alpha,
                                   delta_bias, delta_softplus)
