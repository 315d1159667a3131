"""Elementwise steps written into a tensor that was just made.

On the CPU every fresh buffer costs first-touch cache misses and, at high
resolution, page faults. These helpers give the values of the out-of-place
forms (bit for bit) and reuse ``fresh``, a tensor that nothing else reads, when
that is safe: always for a sum (its backward needs neither operand), only when
autograd does not record for an activation or a product (their backward
would need a copy of the overwritten input, one more pass than allocating).
"""
import torch
import torch.nn.functional as F


def _keeps_dtype(fresh, other):
    return fresh.shape == other.shape and fresh.dtype == torch.result_type(fresh, other)


def _records(*tensors):
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def add_into(fresh, other):
    """``fresh + other``, in ``fresh``'s memory unless the sum needs another
    dtype or shape. ``fresh``'s producer must not need it for its backward (a
    convolution, linear or DropPath output)."""
    return fresh.add_(other) if _keeps_dtype(fresh, other) else fresh + other


def mul_into(fresh, other):
    """``fresh * other``, in ``fresh``'s memory when autograd does not record it."""
    if _keeps_dtype(fresh, other) and not _records(fresh, other):
        return fresh.mul_(other)
    return fresh * other


def silu_into(fresh):
    """``F.silu(fresh)``, in place when autograd does not record it."""
    return F.silu(fresh, inplace=not _records(fresh))


def gelu_into(fresh):
    """``F.gelu(fresh)`` (exact), in place when autograd does not record it."""
    return F.gelu(fresh) if _records(fresh) else torch.ops.aten.gelu_(fresh)
