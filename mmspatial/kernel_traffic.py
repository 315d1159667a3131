"""Memory traffic of the fused Triton op, counted launch by launch without a GPU.

The ops run in ``record_traffic(dry_run=True)`` (the launch hook of
``mmspatial.ops.triton_launch``) on ``meta`` tensors shaped and strided as the
Spatial-Mamba layer passes them (u, delta channels-last; B, C channel slices of
the channels-last projection). Each launch reports the bytes of the tensors it
reads and writes, each counted once: the least that launch moves through device
memory (B and C, shared by all channels, count once).

Beside the timing helpers of ``benchmarking.py``, for the GPU tools
(``tools/gpu_check.py``, ``tools/analysis/kernel_{report,profile}.py``,
``first_contact.py``) and the tests. The regimes need no Triton; the traffic
functions import the Triton backend when called.
"""
from typing import NamedTuple

import torch


class Regime(NamedTuple):
    """One SSM layer's operand sizes: (batch, channels D = d_inner, H, W) tokens."""
    name: str
    batch: int
    channels: int
    height: int
    width: int


def _stages(task, variant, batch, dim, height, width, stages):
    """The regimes of a backbone's stages: D = 2 x dim doubles, H and W halve
    (rounded up: stride-2 3x3 convolutions, padding 1) from stage to stage."""
    return tuple(Regime(f'{task} {variant} s{s + 1}', batch, 2 * dim << s,
                        -(-height // (1 << s)), -(-width // (1 << s)))
                 for s in range(stages))


# Every place that names a realistic size reads it here. Tokens at stage 1 are
# the image over 4 (stem stride); Spatial-Mamba-T dims 64-128-256-512, B 96-...
# (D = d_inner = 2 x dim). Detection: 800x1344 (H x W) -> 200x336 tokens.
REGIMES = (
    *_stages('detection 800x1344 b2', 'T', 2, 64, 200, 336, 4),
    *_stages('detection 800x1344 b2', 'B', 2, 96, 200, 336, 1),
    *_stages('segmentation 512x512 b8', 'T', 8, 64, 128, 128, 1),
    *_stages('classification 224x224 b128', 'T', 128, 64, 56, 56, 4),
)
# The stage-1 regimes of the three tasks (Spatial-Mamba-T): what gpu_check times.
STAGE_ONE = tuple(r for r in REGIMES if r.name.endswith(' T s1'))


def regime(name):
    """The regime called ``name`` (a key of :data:`REGIMES`)."""
    for r in REGIMES:
        if r.name == name:
            return r
    raise KeyError(f'no regime {name!r}; known: {[r.name for r in REGIMES]}')


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
    from mmspatial.ops.structure_aware_ssm.triton_backend import ssm_backward, ssm_forward
    from mmspatial.ops.triton_launch import record_traffic
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


def floor_bytes(batch, channels, height, width, dtype=torch.bfloat16):
    """(forward, backward) bytes of the op's own inputs read once and outputs
    written once, no intermediate state: forward u, delta, B, C -> y (float32);
    backward g_y (float32), u, delta, B, C -> g_u, g_delta, g_B, g_C (parameters
    and their gradients, D-sized, are left out)."""
    s = torch.empty((), dtype=dtype).element_size()
    pixels = batch * height * width
    elements = pixels * channels
    forward = 2 * s * elements + 2 * s * pixels + 4 * elements
    backward = 4 * elements + 2 * s * elements + 2 * s * pixels + 2 * s * elements \
        + 2 * s * pixels
    return forward, backward
