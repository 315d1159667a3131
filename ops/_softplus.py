"""Softplus for the CPU scan, in log2 units, where PyTorch's own is slow.

The chunked scan works in log2 units (``exp2`` is cheaper than ``exp`` in
PyTorch's CPU kernels: see benchmarks/RESULTS.md), so its step sizes arrive
as ``z * log2(e)`` and leave as ``softplus(z) * log2(e)``.
``relu(z) + log1p(exp(-|z|))`` in place, six passes and one scratch buffer;
the ``log1p`` comes from numpy where PyTorch's CPU kernels run AVX-512 (there
PyTorch's is a scalar loop).
"""
import math
from functools import lru_cache

import torch

from ._backend import log_message_once

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)


@lru_cache(maxsize=1)
def numpy_log1p_is_faster():
    """True where PyTorch's CPU kernels run with AVX-512 and numpy imports.

    There ``torch.log1p`` (and ``F.softplus``, built on it) runs a scalar loop,
    several times slower than the same build's AVX2 kernels and than numpy's
    vectorised AVX-512 ``log1p`` (SVML, within 2 ulps): see
    benchmarks/RESULTS.md. Elsewhere ``torch.log1p`` is vectorised and numpy's
    is not.
    """
    if torch.backends.cpu.get_cpu_capability() != 'AVX512':
        return False
    try:
        import numpy  # noqa: F401
    except ImportError:
        log_message_once('log1p', 'mmspatial.ops: CPU softplus uses torch.log1p, scalar '
                         "in PyTorch's AVX-512 kernels (numpy, faster here, is missing)")
        return False
    log_message_once('log1p', "mmspatial.ops: CPU softplus takes log1p from numpy "
                     "(PyTorch's AVX-512 log1p is a scalar loop)")
    return True


def log1p_(x):
    """In place: ``x = log1p(x)``, through numpy for float32 CPU tensors where
    that is faster (:func:`numpy_log1p_is_faster`), else ``torch.log1p_``."""
    if x.dtype == torch.float32 and x.device.type == 'cpu' and numpy_log1p_is_faster():
        import numpy
        array = x.numpy()                        # shares x's memory and strides
        numpy.log1p(array, out=array)
        return x
    return x.log1p_()


def softplus_log2_(x, scratch):
    """In place: x = z * log2(e) on entry, softplus(z) * log2(e) on return.

    ``relu(z) + log1p(exp(-|z|))`` (exact for tiny exp(-|z|)); ``scratch``: a
    tensor shaped like x (clobbered). Matches ``F.softplus`` (threshold 20) to
    float32 rounding, the log2 scaling of z adding a relative error below
    |z| * 6e-8.
    """
    small = torch.abs(x, out=scratch).neg_().exp2_()        # exp(-|z|), in (0, 1]
    return x.clamp_min_(0.0).add_(log1p_(small), alpha=LOG2E)


def softplus_log2(z2):
    """``softplus(z) * log2(e)`` for ``z2 = z * log2(e)`` (see :func:`softplus_log2_`)."""
    return softplus_log2_(z2.clone(), torch.empty_like(z2))
