"""Selective scan: the state recurrence of the SSM, returning every state.

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t,    x_{-1} = 0

Shapes: u, delta (batch, D, L); A (D, N); B (batch, N, L); states (batch, D, N, L).

``reference.py`` (:func:`selective_scan_ref`, one step at a time: the
specification), ``torch_backend.py`` (the chunked scan, no Python loop over L)
and ``triton_backend.py`` (the Triton kernels, imported only when chosen);
:func:`selective_scan` runs the backend ``ops._backend`` chooses.
"""
from .._backend import implementation
from .reference import selective_scan_ref


def selective_scan(u, delta, A, B, delta_bias=None, delta_softplus=True, *,
                   backend=None):
    """Selective scan on the chosen backend; see :func:`selective_scan_ref`.

    ``backend``: ``'triton'``, ``'torch'`` or ``None`` (automatic, see ``ops._backend``).
    """
    run = implementation('selective_scan', backend, u.device)
    return run(u, delta, A, B, delta_bias, delta_softplus)


__all__ = ['selective_scan', 'selective_scan_ref']
