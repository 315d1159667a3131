"""Argument checks shared by every backend of the three operators.

Each raises ``ValueError`` naming the entry point that was called, the argument
and the shape it must have, e.g. ``structure_aware_ssm_triton: C must be (2, 1,
14, 9) for u of shape (2, 96, 14, 9), got (2, 1, 14, 1)``. The dispatchers leave
the checks to the backend they choose, so each call is checked once.
"""


def _compare(op_name, subject, expected):
    """``expected``: {argument name: (tensor or None, wanted shape)}; None is skipped."""
    for name, (tensor, want) in expected.items():
        if tensor is not None and tuple(tensor.shape) != want:
            raise ValueError(f'{op_name}: {name} must be {want} for {subject}, '
                             f'got {tuple(tensor.shape)}')


def _non_empty(op_name, name, tensor, dims):
    """Every backend rejects empty inputs alike (the chunked scan and the kernels
    have no meaning for them, and a zero-size batch reaching a backbone is a bug
    upstream)."""
    if tensor.numel() == 0:
        raise ValueError(f'{op_name}: {name} of shape {tuple(tensor.shape)} is empty; '
                         f'{dims} must all be at least 1')


def _state_dim(op_name, A, channels):
    """N of A, which must be (D, N)."""
    if A.dim() != 2:
        raise ValueError(f'{op_name}: A must be (D, N) = ({channels}, N), '
                         f'got {tuple(A.shape)}')
    return A.shape[1]


def check_scan_args(op_name, u, delta, A, B, delta_bias):
    """u, delta (batch, D, L); A (D, N); B (batch, N, L); delta_bias (D,) or None."""
    if u.dim() != 3:
        raise ValueError(f'{op_name}: u must be (batch, D, L), got {tuple(u.shape)}')
    _non_empty(op_name, 'u', u, 'batch, D and L')
    batch, channels, length = u.shape
    state_dim = _state_dim(op_name, A, channels)
    _compare(op_name, f'u of shape {tuple(u.shape)}', {
        'delta': (delta, (batch, channels, length)),
        'A': (A, (channels, state_dim)),
        'B': (B, (batch, state_dim, length)),
        'delta_bias': (delta_bias, (channels,))})


def check_fusion_args(op_name, x, kernels, alpha):
    """x (batch, D, H, W); kernels (3, D, 3, 3); alpha (3,)."""
    if x.dim() != 4:
        raise ValueError(f'{op_name}: x must be (batch, D, H, W), got {tuple(x.shape)}')
    _non_empty(op_name, 'x', x, 'batch, D, H and W')
    _compare(op_name, f'x of shape {tuple(x.shape)}', {
        'kernels': (kernels, (3, x.shape[1], 3, 3)),
        'alpha': (alpha, (3,))})


def check_ssm_args(op_name, u, delta, A, B, C, Dskip, kernels, alpha, delta_bias):
    """u, delta (batch, D, H, W); A (D, N); B, C (batch, N, H, W); Dskip (D,);
    kernels (3, D, 3, 3); alpha (3,); delta_bias (D,) or None."""
    if u.dim() != 4:
        raise ValueError(f'{op_name}: u must be (batch, D, H, W), got {tuple(u.shape)}')
    _non_empty(op_name, 'u', u, 'batch, D, H and W')
    batch, channels, height, width = u.shape
    state_dim = _state_dim(op_name, A, channels)
    _compare(op_name, f'u of shape {tuple(u.shape)}', {
        'delta': (delta, (batch, channels, height, width)),
        'A': (A, (channels, state_dim)),
        'B': (B, (batch, state_dim, height, width)),
        'C': (C, (batch, state_dim, height, width)),
        'Dskip': (Dskip, (channels,)),
        'kernels': (kernels, (3, channels, 3, 3)),
        'alpha': (alpha, (3,)),
        'delta_bias': (delta_bias, (channels,))})
