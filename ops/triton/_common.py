"""Pieces shared by the Triton operators: jit helpers, block sizes, op registration.

Block sizes are chosen per call by the ``*_blocks`` functions below; tests shrink
them with :func:`override_config` so that partial blocks and multi-chunk carries
occur at the small shapes the Triton interpreter can afford.
"""
import contextlib
from functools import lru_cache

import torch
import triton
import triton.language as tl

NAMESPACE = 'mmspatial'

# ``None`` means: choose from the problem size (see the ``*_blocks`` functions).
_DEFAULT_CONFIG = dict(
    scan_block_l=None,      # time steps per chunk of the scan (power of two)
    scan_block_d=None,      # channels per scan program (power of two)
    fusion_block_p=None,    # pixels per fusion tile (power of two)
    fusion_block_d=None,    # channels per fusion tile (power of two)
    ring_block_r=None,      # border pixels per program of the border kernel
    ring_block_d=None,      # channels per program of the border kernel
    poison_outputs=False,   # fill outputs with NaN before launch (tests: unwritten
                            # elements then show up as NaN instead of stale zeros)
)
_config = dict(_DEFAULT_CONFIG)


@contextlib.contextmanager
def override_config(**overrides):
    """Temporarily set block sizes (or ``poison_outputs``); for tests and tuning."""
    unknown = set(overrides) - set(_DEFAULT_CONFIG)
    if unknown:
        raise KeyError(f'unknown Triton op settings {sorted(unknown)}; '
                       f'known: {sorted(_DEFAULT_CONFIG)}')
    for key, value in overrides.items():
        if key.startswith(('scan_block', 'fusion_block', 'ring_block')) and \
                value is not None and (value < 1 or value & (value - 1)):
            raise ValueError(f'{key} must be a power of two, got {value}')
    saved = dict(_config)
    _config.update(overrides)
    try:
        yield
    finally:
        _config.clear()
        _config.update(saved)


def new_output(shape, dtype, device):
    """``torch.empty``, or NaN-filled when ``poison_outputs`` is set."""
    if _config['poison_outputs']:
        return torch.full(shape, float('nan'), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _sm_count(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_wanted(device):
    """Programs that keep every multiprocessor busy (a few per SM)."""
    if device.type != 'cuda':
        return 1
    return 4 * _sm_count(device.index if device.index is not None
                         else torch.cuda.current_device())


# Tile sizes: elements per program (BLOCK_D x BLOCK_L or BLOCK_D x BLOCK_P) and warps,
# chosen from ptxas' report for sm_90 (registers, no spills; see the notes in the
# NOTES.md beside this file): the backward scan holds ~12 live float32 tiles, so it
# gets 8 warps for 1024 elements; the 25-tap stencils keep many gathers in
# flight and spill above ~4 elements per thread.
SCAN_TILE, SCAN_FWD_WARPS, SCAN_BWD_WARPS = 1024, 4, 8
FUSION_TILE, FUSION_WARPS = 512, 4
RING_WARPS = 4


def scan_blocks(batch, channels, state_dim, length, device):
    """(BLOCK_D, BLOCK_L) of the scan: SCAN_TILE elements a chunk, enough programs."""
    block_l = _config['scan_block_l'] or min(triton.next_power_of_2(length), SCAN_TILE)
    block_d = _config['scan_block_d']
    if block_d is None:
        block_d = min(max(1, SCAN_TILE // block_l), triton.next_power_of_2(channels))
        wanted = _programs_wanted(device)
        while block_d > 1 and \
                batch * state_dim * triton.cdiv(channels, block_d) < wanted:
            block_d //= 2
    return block_d, block_l


def fusion_blocks(channels, length):
    """(BLOCK_D, BLOCK_P) of the fusion tiles: FUSION_TILE elements a tile."""
    block_p = _config['fusion_block_p'] or min(triton.next_power_of_2(length),
                                               FUSION_TILE // 2)
    block_d = _config['fusion_block_d'] or min(
        max(1, FUSION_TILE // block_p), triton.next_power_of_2(channels))
    return block_d, block_p


def ring_blocks(channels, ring_length):
    """(BLOCK_D, BLOCK_R) of the border-ring kernel of the fusion backward."""
    block_r = _config['ring_block_r'] or min(triton.next_power_of_2(ring_length), 128)
    block_d = _config['ring_block_d'] or min(triton.next_power_of_2(channels), 8)
    return block_d, block_r


def is_interpreted(kernel):
    """True when ``kernel`` was built for the Triton interpreter (TRITON_INTERPRET=1
    at the time its module was imported: Triton reads the variable at decoration)."""
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(kernel, InterpretedFunction)


def check_launchable(op_name, kernel, *tensors):
    """Raise a clear error when the kernels cannot run on these tensors."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(f'{op_name}: all tensors must be on one device, got {devices}')
    device = devices.pop()
    if device.type == 'cuda' or is_interpreted(kernel):
        return device
    raise RuntimeError(
        f'{op_name}: the Triton kernels run CUDA tensors, or CPU tensors when '
        f'TRITON_INTERPRET=1 was set before mmspatial.ops.triton was imported; '
        f'got {device.type} tensors and compiled kernels')


def device_guard(device):
    """Launch on the tensors' GPU, not the current one."""
    if device.type == 'cuda':
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def custom_op(name, fake):
    """Register ``fn`` as ``torch.ops.mmspatial.<name>`` with a fake (meta) kernel.

    ``torch.compile`` treats the op as opaque and traces shapes through ``fake``.
    When the op already exists (this package imported under two module names,
    ``ops`` and ``mmspatial.ops``, or reloaded) the existing op is returned.
    """
    def register(fn):
        try:
            return getattr(getattr(torch.ops, NAMESPACE), name)
        except (AttributeError, RuntimeError):
            pass
        op = torch.library.custom_op(f'{NAMESPACE}::{name}', mutates_args=())(fn)
        op.register_fake(fake)
        return op
    return register


@triton.jit
def first_order_combine(decay_1, value_1, decay_2, value_2):
    """Compose x -> decay_1 * x + value_1, then x -> decay_2 * x + value_2."""
    return decay_1 * decay_2, decay_2 * value_1 + value_2


@triton.jit
def softplus(z):
    """PyTorch's softplus (threshold 20) with an accurate log1p for small exp(z)."""
    e = tl.exp(tl.minimum(z, 20.0))
    w = 1.0 + e
    # log1p(e) = log(w) * e / (w - 1) is exact up to rounding (Goldberg), also
    # for e far below float32's epsilon where log(1 + e) would round to 0.
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.where(z > 20.0, z, log1p)


@triton.jit
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def last_along_axis1(values, idx, BLOCK: tl.constexpr):
    """values[:, BLOCK - 1] of a (rows, BLOCK) tile, as a (rows,) vector."""
    return tl.sum(tl.where(idx[None, :] == BLOCK - 1, values, 0.0), axis=1)
