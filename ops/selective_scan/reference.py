"""The selective scan as written, one step at a time: the specification."""
import torch
import torch.nn.functional as F

from .._library import compute_dtype
from .._shape_checks import check_scan_args


def _prepare_delta(delta, delta_bias, delta_softplus):
    """Delta with the bias added and softplus applied, (batch, D, L).

    In float32 (float64 when delta is float64, so that gradcheck can run).
    """
    delta = delta.to(compute_dtype(delta))
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def selective_scan_ref(u, delta, A, B, delta_bias=None, delta_softplus=True):
    """The recurrence as written, one step at a time, in float32.

    Args:
        u (Tensor): (batch, D, L) input.
        delta (Tensor): (batch, D, L) step sizes before bias and softplus.
        A (Tensor): (D, N) state matrix (negative for a stable scan).
        B (Tensor): (batch, N, L) input matrix.
        delta_bias (Tensor, optional): (D,) added to delta.
        delta_softplus (bool): apply softplus to delta (after the bias).

    Returns:
        Tensor: (batch, D, N, L) float32 states (float64 for float64 inputs).
    """
    check_scan_args('selective_scan_ref', u, delta, A, B, delta_bias)
    dtype = compute_dtype(u, delta, A, B, delta_bias)
    delta = _prepare_delta(delta.to(dtype), delta_bias, delta_softplus)
    u, A, B = u.to(dtype), A.to(dtype), B.to(dtype)
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None])       # (b, D, N, L)
    drive = (delta * u)[:, :, None, :] * B[:, None, :, :]               # (b, D, N, L)
    state = torch.zeros_like(decay[..., 0])
    states = []
    for t in range(u.shape[-1]):
        state = decay[..., t] * state + drive[..., t]
        states.append(state)
    return torch.stack(states, dim=-1)
