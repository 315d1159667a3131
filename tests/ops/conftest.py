"""Shared helpers of the operator tests: random SSM inputs and scale-aware comparisons."""
import pytest
import torch

# Input dtypes of the parametrised tests. Every path computes in float32 from
# the same (rounded) inputs, so results are compared at float32 tolerances.
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Gradients come back in the input dtype, each rounded from a float32 value that
# differs between implementations by float32 rounding: two ulps of the dtype,
# plus an absolute slack relative to the largest gradient.
GRAD_TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2 ** -7, 1e-4),
                   torch.float16: (2 ** -10, 1e-4)}


def assert_close(actual, expected, rtol=1e-5, atol_scale=1e-5):
    """Elementwise closeness with an absolute slack relative to the data's scale.

    ``atol = atol_scale * max|expected|``: states of a long scan are sums of
    many terms, so near-zero entries carry rounding errors of that size.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), 'non-finite values'
    expected = expected.to(actual.dtype)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol_scale * scale + 1e-30)


def make_scan_inputs(batch, channels, length, state_dim, dtype=torch.float32,
                     generator=None, bias=True):
    """u, delta (b, D, L); A (D, N) negative; B (b, N, L); delta_bias (D,) or None.

    delta and bias are drawn so that softplus(delta + bias) spans the model's
    initial range (about 1e-3 .. 1e-1) and beyond.
    """
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    u = randn(batch, channels, length)
    delta = randn(batch, channels, length)
    A = -torch.rand(channels, state_dim, generator=generator) * 2 - 0.1
    B = randn(batch, state_dim, length)
    delta_bias = randn(channels) - 3 if bias else None
    return tuple(t.to(dtype) if t is not None else None
                 for t in (u, delta, A, B, delta_bias))


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread while an operator test runs.

    The tests use small tensors, for which OpenMP start-up and spin-waiting
    dominate: on a loaded 2-core machine the float64 gradchecks ran 10-20x
    slower with two threads.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
