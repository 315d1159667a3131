"""What the Triton backends of the three operators share: launch settings, the
launch hook, layout and jit helpers.

Kernels run CUDA tensors; CPU tensors run under the Triton interpreter when
``TRITON_INTERPRET=1`` was in the environment when the Triton backends were
imported (Triton reads it when a ``@triton.jit`` function is defined): slow,
for tests. Each Triton backend is a ``torch.autograd.Function`` (stable class
names for FLOP counters: ``SelectiveScanTritonFn``, ``StateFusionTritonFn``,
``StructureAwareSSMTritonFn``) whose forward and backward are ``torch.library``
custom ops (``torch.ops.mmspatial.<op>_triton_fwd`` / ``_bwd``) with fake
kernels, so ``torch.compile`` traces through them without graph breaks; outside
compilation the functions run directly. No call synchronises with the host, so
the ops can be captured in CUDA graphs.

Layout. Every kernel addresses its (batch, L, D) operands through three strides
(batch, position, channel), so channels-last tensors, the layer's own layout,
are read and written in place: a program's tile is BLOCK_P positions by
BLOCK_D channels, and with a channel stride of 1 (Triton specialises it) each
row of the tile is one vector load. Plain (batch, D, L) tensors work as well,
with scalar loads.

Settings. Block sizes and warps are read from :data:`_config` at every call, so
tests shrink them (partial tiles and many chunks at interpreter-sized shapes)
and the benchmark sweeps them with :func:`override_config`.

Traffic. Each launch goes through :func:`launch`, which names the tensors the
kernel reads and writes; inside :func:`record_traffic` their sizes are summed
per launch (the bytes of each tensor once, what a kernel must move at least):
the hook of the traffic account, ``mmspatial/kernel_traffic.py``.
Inside :func:`record_launches` a callback sees every launch as made (kernel,
grid, arguments, meta-parameters): the static GPU profile
(``tools/analysis/kernel_report.py``) captures the specialisations with it.
"""
import contextlib

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

# Launch settings; a sweep or a test changes them with ``override_config``.
_DEFAULT_CONFIG = dict(
    scan_block_l=64,        # time steps per scan chunk (power of two)
    scan_block_t=None,      # time steps per iteration of a chunk's loop (power of two;
                            # None: 1 on a GPU, the whole chunk in the interpreter)
    scan_block_d=128,       # channels per scan chunk program (power of two)
    scan_block_c=64,        # chunks per step of the carry pass (power of two)
    scan_carry_block_d=4,   # channels per program of the carry pass (power of two)
    scan_carry_warps=2,
    scan_fwd_warps=1,
    scan_bwd_warps=1,
    fusion_block_p=32,      # pixels per tile of the forward stencil (power of two)
    fusion_block_d=32,      # channels per tile of the forward stencil and per block of
                            # the backward's padded g_h (power of two)
    fusion_fwd_warps=2,
    fusion_bwd_block_p=8,   # columns per program of the weights' sums
    fusion_bwd_rows=16,     # rows per program of the weights' sums
    fusion_bwd_step_w=None,  # pixels per step of their walk (power of two; None: 1
                             # on a GPU, the program's columns in the interpreter)
    fusion_bwd_block_d=128,  # channels per program of the weights' sums
    fusion_bwd_warps=1,
    fusion_bwd_input_block_p=64,    # pixels per program of the input gradient (the
                                    # fused op: the scan's chunk, scan_block_l)
    fusion_bwd_input_step=None,     # pixels per step of its walk (power of two; None:
                                    # 1 on a GPU, the program's pixels in the interpreter)
    fusion_bwd_input_block_d=128,   # channels per program of the input gradient
    fusion_bwd_input_warps=1,
    fusion_border_block_p=8,    # positions along a side per border program (16: 16 B
                                # of spills at segmentation's 128x128 tokens)
    fusion_border_warps=1,
    fusion_row_terms_min_height=20,     # images of at least this many rows: the input
                                        # gradient's walk takes the first and last
                                        # rows' border terms (fewer: the border launch)
    poison_outputs=False,   # fill outputs with NaN before launch (tests: unwritten
                            # elements then show up as NaN instead of stale values)
)
_config = dict(_DEFAULT_CONFIG)
_POWER_OF_TWO_KEYS = tuple(k for k in _DEFAULT_CONFIG
                           if '_block_' in k or k.endswith(('_step_w', '_step')))


def config():
    """The launch settings in force (a copy)."""
    return dict(_config)


@contextlib.contextmanager
def override_config(**overrides):
    """Temporarily change launch settings (block sizes, warps, ``poison_outputs``)."""
    unknown = set(overrides) - set(_DEFAULT_CONFIG)
    if unknown:
        raise KeyError(f'unknown Triton op settings {sorted(unknown)}; '
                       f'known: {sorted(_DEFAULT_CONFIG)}')
    for key, value in overrides.items():
        if key in _POWER_OF_TWO_KEYS and value is not None and (
                value < 1 or value & (value - 1)):
            raise ValueError(f'{key} must be a power of two, got {value}')
        if key.endswith('_warps') and value not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f'{key} must be a power of two up to 32, got {value}')
    saved = dict(_config)
    _config.update(overrides)
    try:
        yield
    finally:
        _config.clear()
        _config.update(saved)


def block(key, extent):
    """The setting ``key``, capped at the next power of two of ``extent``."""
    return min(_config[key], triton.next_power_of_2(max(int(extent), 1)))


def steps_per_iteration(key, extent, kernel):
    """Steps a loop of ``kernel`` takes per iteration over a tile of ``extent``
    (a power of two): the setting ``key``, or when it is None one compiled and
    all of them under the interpreter, whose cost is per operation, not per
    element; capped at ``extent``."""
    steps = _config[key] or (extent if is_interpreted(kernel) else 1)
    return min(steps, extent)


def new_output(shape, dtype, device):
    """``torch.empty``, or NaN-filled when ``poison_outputs`` is set."""
    if _config['poison_outputs']:
        return torch.full(shape, float('nan'), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def poison(tensor):
    """``tensor`` NaN-filled when ``poison_outputs`` is set (for outputs made elsewhere)."""
    if _config['poison_outputs'] and tensor.is_floating_point():
        tensor.fill_(float('nan'))
    return tensor


# ---------------------------------------------------------------------- launch hook

_traffic_log = None
_dry_run = False
_launch_recorders = []


@contextlib.contextmanager
def record_traffic(dry_run=False):
    """Record every launch inside the block: yields a list of
    ``(kernel name, bytes read, bytes written)``, filled as kernels launch.

    ``dry_run``: launch nothing. With tensors on the ``meta`` device the ops
    then run their glue only, so the traffic of any size is counted on a CPU.
    """
    global _traffic_log, _dry_run
    saved = _traffic_log, _dry_run
    _traffic_log, _dry_run = [], dry_run
    try:
        yield _traffic_log
    finally:
        _traffic_log, _dry_run = saved


@contextlib.contextmanager
def record_launches(callback):
    """Call ``callback(kernel, grid, args, meta, reads, writes)`` for every launch
    inside the block, before it runs (or instead of it, in a dry run)."""
    _launch_recorders.append(callback)
    try:
        yield
    finally:
        _launch_recorders.remove(callback)


def _nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def launch(kernel, grid, *args, reads=(), writes=(), **meta):
    """``kernel[grid](*args, **meta)`` on the tensors' device, traffic recorded."""
    if _traffic_log is not None:
        _traffic_log.append((kernel.fn.__name__ if hasattr(kernel, 'fn') else str(kernel),
                             _nbytes(reads), _nbytes(writes)))
    for callback in _launch_recorders:
        callback(kernel, grid, args, meta, reads, writes)
    if _dry_run:
        return
    device = next(t.device for t in args if torch.is_tensor(t))
    guard = torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()
    with guard:
        kernel[grid](*args, **meta)


# ------------------------------------------------------------------------ checks

def is_interpreted(kernel):
    """True when ``kernel`` was built for the Triton interpreter (TRITON_INTERPRET=1
    at the time its module was imported: Triton reads the variable at decoration)."""
    return isinstance(kernel, InterpretedFunction)


def kernels_interpreted():
    """True when the kernels were built for the Triton interpreter (CPU tensors)."""
    from .selective_scan.triton_backend import _scan_chunk_kernel
    return is_interpreted(_scan_chunk_kernel)


def check_launchable(op_name, kernel, *tensors):
    """Raise a clear error when the kernels cannot run on these tensors."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(f'{op_name}: all tensors must be on one device, got {devices}')
    device = devices.pop()
    if device.type == 'cuda' or is_interpreted(kernel) or (_dry_run and
                                                           device.type == 'meta'):
        return device
    raise RuntimeError(
        f'{op_name}: the Triton kernels run CUDA tensors, or CPU tensors when '
        f'TRITON_INTERPRET=1 was set before the Triton backends were imported; '
        f'got {device.type} tensors and compiled kernels')


def sequence_view(t, height_width=None):
    """(batch, L, C) view of a (batch, C, L) or (batch, C, H, W) tensor, no copy when
    its H and W dimensions can be merged (true of contiguous and channels-last
    tensors; other layouts are copied once, channels-last)."""
    if t.dim() == 4:
        if t.shape[2] > 1 and t.shape[3] > 1 and t.stride(2) != t.shape[3] * t.stride(3):
            t = t.contiguous(memory_format=torch.channels_last)
        t = t.flatten(2)
    return t.transpose(1, 2)


def strides(t):
    """The three strides of a (batch, L, C) view: batch, position, channel."""
    return t.stride(0), t.stride(1), t.stride(2)


# -------------------------------------------------------------------- jit helpers

@triton.jit
def first_order_combine(decay_1, value_1, decay_2, value_2):
    """Compose x -> decay_1 * x + value_1, then x -> decay_2 * x + value_2."""
    return decay_1 * decay_2, decay_2 * value_1 + value_2


LOG2E = tl.constexpr(1.4426950408889634)
"""log2(e): ``exp(x)`` is ``tl.exp2(x * LOG2E)``, one ``ex2`` whose results
below 2**-126 flush to zero (``tl.exp`` adds three instructions to keep them)."""


@triton.jit
def _divide_approx(x, y):
    """x / y as a reciprocal and a product (``div.approx``), within 2 ulp for
    |y| in [2**-126, 2**126]: without the range scaling of ``/``."""
    return libdevice.fast_dividef(x, y)


@triton.jit
def _divide_exact(x, y):
    return x / y


# libdevice's fast division has no interpreter implementation: interpreted
# kernels divide exactly (the tests' reference within 2 ulp of the compiled one).
divide = _divide_exact if is_interpreted(_divide_approx) else _divide_approx


@triton.jit
def softplus(z):
    """PyTorch's softplus (threshold 20) as ``max(z, 0) + log1p(exp(-|z|))``,
    log1p(t) = 2 atanh(t / (2 + t)) by its series to the s**13 term (for t in
    (0, 1], s <= 1/3: relative error below 2e-8; no ``log``, whose float32
    routine costs about 25 instructions); NaN stays NaN. exp(-|z|) below
    2**-126 is taken as 0: softplus(z) for z < -87 is 0 instead of exp(z)."""
    t = tl.exp2(-tl.abs(z) * LOG2E)
    s = divide(t, 2.0 + t)
    s2 = s * s
    p = s2 * (1.0 / 13.0) + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    out = tl.maximum(z, 0.0) + 2.0 * s * p
    return tl.where((z > 20.0) | (z != z), z, out)


@triton.jit
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = tl.exp2(-tl.abs(z) * LOG2E)
    r = divide(1.0, 1.0 + e)
    return tl.where(z >= 0, r, e * r)


@triton.jit
def step_size(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(z, dt) of a (steps, BLOCK_D) tile: delta + bias before softplus, and
    the step size actually used."""
    z = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z = z + bias[None, :]
    dt = z
    if SOFTPLUS:
        dt = softplus(z)
    return z, dt


@triton.jit
def adjoint_chunk_summary(g, dt, A_log2, mask):
    """(decay, flow), each (BLOCK_D,), of the adjoint recurrence
    ``lam_t = g_t + a_{t+1} lam_{t+1}`` over one chunk of a (steps, BLOCK_D)
    tile in time order, from a zero flow after it: the decay product
    ``prod_t a_t`` and the flow into the steps before the chunk,
    ``a_first lam_first = sum_t (a_first ... a_t) g_t``, with
    ``a_t = exp2(dt_t A_log2)``. Steps where ``mask`` is false are left out."""
    dt = tl.where(mask, dt, 0.0)
    prefix = tl.exp2(tl.cumsum(dt, axis=0) * A_log2[None, :])      # a_first ... a_t
    flow = tl.sum(tl.where(mask, prefix * g, 0.0), axis=0)
    return tl.exp2(tl.sum(dt, axis=0) * A_log2), flow


@triton.jit
def row_of(values, idx, ROW: tl.constexpr):
    """values[ROW, :] of a (rows, cols) tile, as a (cols,) vector (idx: arange of rows)."""
    return tl.sum(tl.where(idx[:, None] == ROW, values, 0.0), axis=0)
