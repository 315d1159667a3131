"""The structure-aware SSM step as the composition of its three steps: the
specification."""
from .._shape_checks import check_ssm_args
from ..selective_scan.reference import selective_scan_ref
from ..state_fusion.reference import state_fusion_ref


def structure_aware_ssm_ref(u, delta, A, B, C, Dskip, kernels, alpha,
                            delta_bias=None, delta_softplus=True):
    """Reference composition of the three steps, in float32 (float64 inputs: float64)."""
    check_ssm_args('structure_aware_ssm_ref', u, delta, A, B, C, Dskip, kernels, alpha,
                   delta_bias)
    batch, channels, height, width = u.shape
    state_dim = A.shape[-1]
    states = selective_scan_ref(u.flatten(2), delta.flatten(2), A, B.flatten(2),
                                delta_bias, delta_softplus)
    fused = state_fusion_ref(
        states.reshape(batch, channels * state_dim, height, width),
        kernels.repeat_interleave(state_dim, dim=1), alpha)
    fused = fused.view(batch, channels, state_dim, height, width)
    y = (fused * C.to(fused.dtype)[:, None]).sum(dim=2)
    return y + Dskip.to(fused.dtype)[None, :, None, None] * u.to(fused.dtype)
