"""Selective scan: the state recurrence of the SSM, returning every state.

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t,    x_{-1} = 0

Shapes: u, delta (batch, D, L); A (D, N); B (batch, N, L); states (batch, D, N, L).
"""
import torch
import torch.nn.functional as F

from ._backend import resolve_backend


def _prepare_delta(delta, delta_bias, delta_softplus):
    """Float32 delta with the bias added and softplus applied, (batch, D, L)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
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
        Tensor: (batch, D, N, L) float32 states.
    """
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    u, A, B = u.float(), A.float(), B.float()
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None])       # (b, D, N, L)
    drive = (delta * u)[:, :, None, :] * B[:, None, :, :]               # (b, D, N, L)
    state = torch.zeros_like(decay[..., 0])
    states = []
    for t in range(u.shape[-1]):
        state = decay[..., t] * state + drive[..., t]
        states.append(state)
    return torch.stack(states, dim=-1)


def selective_scan(u, delta, A, B, delta_bias=None, delta_softplus=True, *,
                   backend=None):
    """Selective scan dispatched to the chosen backend; see :func:`selective_scan_ref`.

    ``backend``: ``'triton'``, ``'torch'`` or ``None`` (automatic, see ``ops._backend``).
    """
    backend = resolve_backend('selective_scan', backend, u.device)
    return selective_scan_ref(u, delta, A, B, delta_bias, delta_softplus)
