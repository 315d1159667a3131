"""Memory traffic of the fused Triton op, counted launch by launch without a GPU.

The ops run in ``record_traffic(dry_run=True)`` on ``meta`` tensors shaped and
strided as the Spatial-Mamba layer passes them (u, delta channels-last; B, C
channel slices of the channels-last projection). Each launch reports the bytes
of the tensors it reads and writes, each counted once: the least that launch
moves through device memory (B and C, shared by all channels, count once).
"""
import torch

from ._common import record_traffic
from .structure_aware_ssm import ssm_backward, ssm_forward

# (name, batch, D, H, W) of stage 1 of Spatial-Mamba-T in the three tasks
REGIMES = (
    ('detection 1344x800', 2, 128, 336, 200),
    ('segmentation 512x512', 8, 128, 128, 128),
    ('classification 224x224 b128', 128, 128, 56, 56),
)


def layer_inputs(batch, channels, height, width, dtype, device='meta', rank=None):
    """Inputs of ``structure_aware_ssm`` as the layer makes them (requires no grad)."""
    rank = rank or -(-channels // 32)            # dt_rank = ceil(C / 16), C = D / 2

    def channels_last(c):
        return torch.empty((batch, height, width, c), dtype=dtype,
                           device=device).permute(0, 3, 1, 2)
    x_dbl = channels_last(rank + 2)
    f32 = dict(dtype=torch.float32, device=device)
    return (channels_last(channels), channels_last(channels), torch.empty(channels, 1, **f32),
            x_dbl[:, rank:rank + 1], x_dbl[:, rank + 1:], torch.empty(channels, **f32),
            torch.empty(3, channels, 3, 3, **f32), torch.empty(3, **f32),
            torch.empty(channels, **f32))


def fused_op_traffic(batch, channels, height, width, dtype=torch.bfloat16):
    """{'forward': [(kernel, read, written)], 'backward': [...]}, bytes per launch."""
    inputs = layer_inputs(batch, channels, height, width, dtype)
    with record_traffic(dry_run=True) as forward:
        y, states = ssm_forward(*inputs, True)
    g_y = torch.empty_like(y)
    with record_traffic(dry_run=True) as backward:
        ssm_backward(g_y, states, *inputs, True)
    return {'forward': list(forward), 'backward': list(backward)}


def bytes_per_element(launches, batch, channels, height, width):
    """Total bytes of ``launches`` over batch x D x L."""
    return sum(r + w for _, r, w in launches) / (batch * channels * height * width)


def minimum_bytes_per_element(dtype=torch.bfloat16):
    """(forward, backward) floors: forward reads u, delta, writes y (float32) and the
    float32 states the backward needs; backward reads g_y (float32), the states,
    u, delta and writes g_u, g_delta."""
    s = torch.empty((), dtype=dtype).element_size()
    return 2 * s + 4 + 4, 4 + 4 + 2 * s + 2 * s
