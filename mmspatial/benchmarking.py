"""What the timing tools share: the operators' inputs, timers, and progress.

Used by ``tools/analysis/benchmark_{ops,backbone,model}.py`` and
``tools/gpu_check.py``. Needs only PyTorch (``progress`` imports mmengine when
called): the GPU machine that runs ``gpu_check`` has no OpenMMLab.
"""
import statistics
import sys
import time
from contextlib import contextmanager

import torch


def ssm_inputs(batch, channels, height, width, state_dim=1, dtype=torch.float32,
               device='cpu', channels_last=True, requires_grad=False, seed=0):
    """Inputs as the backbone passes them: channels-last (batch, D, H, W) u and
    delta, B and C (batch, N, H, W); step sizes in the initial range 1e-3..1e-1.

    Returns a dict keyed like the arguments of ``structure_aware_ssm``.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=gen) * scale + shift

    dt = torch.exp(torch.rand(channels, generator=gen) * 4.6 - 6.9)
    u = rand(batch, channels, height, width)
    delta = rand(batch, channels, height, width, scale=0.5)
    if channels_last:
        u, delta = (t.contiguous(memory_format=torch.channels_last) for t in (u, delta))
    inputs = dict(u=u, delta=delta, A=-torch.ones(channels, state_dim),
                  B=rand(batch, state_dim, height, width),
                  C=rand(batch, state_dim, height, width), Dskip=torch.ones(channels),
                  kernels=rand(3, channels, 3, 3, scale=0.3), alpha=torch.ones(3),
                  delta_bias=dt + torch.log(-torch.expm1(-dt)))
    out = {}
    for name, t in inputs.items():
        t = t.to(device=device, dtype=dtype if name in ('u', 'delta', 'B', 'C') else
                 torch.float32)
        out[name] = t.requires_grad_(requires_grad)
    return out


def scan_args(x):
    """(u, delta, A, B, delta_bias) of the scan from fused-op inputs."""
    return (x['u'].flatten(2), x['delta'].flatten(2), x['A'], x['B'].flatten(2),
            x['delta_bias'])


def fused_args(x):
    """The positional arguments of ``structure_aware_ssm`` from ``ssm_inputs``."""
    return (x['u'], x['delta'], x['A'], x['B'], x['C'], x['Dskip'], x['kernels'],
            x['alpha'], x['delta_bias'])


def time_cpu(fn, repeats, warmup=2):
    """(median, min) wall-clock seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def time_side_by_side(fns, repeats, warmup=2, on_round=None):
    """Medians (and minima) in seconds of several functions timed in alternation,
    so that drifting machine load hits all of them alike; ``on_round()`` is
    called after each timed round."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
        if on_round is not None:
            on_round()
    return [(statistics.median(t), min(t)) for t in times]


def time_cuda(fn, repeats, warmup=3):
    """Median milliseconds of ``fn()`` by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_ms(fn, repeats, warmup, device):
    """Median milliseconds of ``fn()``: CUDA events on a GPU, wall clock on CPU
    (the Triton interpreter of a smoke run)."""
    if torch.device(device).type == 'cuda':
        return time_cuda(fn, repeats, warmup)
    return time_cpu(fn, repeats, warmup)[0] * 1e3


def forward_backward(fn, inputs):
    """A closure running ``fn(*inputs)`` and backpropagating a fixed gradient."""
    params = [t for t in inputs if t is not None and t.requires_grad]
    grad = None

    def run():
        nonlocal grad
        out = fn(*inputs)
        if grad is None:
            grad = torch.randn_like(out)
        torch.autograd.grad(out, params, grad)
    return run


@contextmanager
def progress(total, label, file=None):
    """Yield an ``update()`` to call after each of ``total`` steps: ``label``,
    then mmengine's ``ProgressBar`` (plain text, no colour codes) on ``file``
    (default stderr, so that stdout holds only the results)."""
    from mmengine.utils import ProgressBar
    file = file or sys.stderr
    file.write(f'{label}\n')
    bar = ProgressBar(total, file=file)
    try:
        yield bar.update
    finally:
        file.write('\n')
        file.flush()
