"""Time the structure-aware SSM operators; print markdown for benchmarks/RESULTS.md.

CPU (always):
  * the PyTorch backend's chunked scan against the sequential loop of
    ``selective_scan_ref`` at L = 3136, D = 128, batch 2, N = 1, side by side;
  * forward (and fused forward + backward) times of the PyTorch backend at the
    shapes of Spatial-Mamba-T's four stages, batch 1 at 224x224;
  * ``--chunks 16,32,64,128``: the same for several chunk lengths (to check
    ``selective_scan.default_chunk``);
  * the share of the 18 SSM ops in a Spatial-Mamba-T forward at 224x224, for
    the PyTorch backend and for the sequential-loop reference, side by side
    (needs ``mmspatial.models``, so mmengine; skipped with a note otherwise).
CUDA (when a GPU is present, or only with ``--device cuda``): forward and
forward + backward of the fused Triton op, of the unfused Triton ops and of the
PyTorch reference composition, for classification, detection and segmentation
shapes, with the bytes each moves and the achieved fraction of peak memory
bandwidth. ``--check`` instead compares Triton with the references on CUDA
(values and gradients, float32 / bfloat16 / float16) and exits 1 on a mismatch.

Which ``ops`` package is measured: by default the installed ``mmspatial.ops``;
with ``--ops-from-source`` the ``ops/`` folder of this checkout, imported by
putting the repository root on ``sys.path`` inside this script only (for a
checkout that is not ``pip install -e``'d). A failed import is an error, never
a silent switch to the other copy.

``--smoke``: every table and check at tiny shapes with two repeats, to check
that the script itself runs (CI does, ``tests/tools/test_benchmark_ops.py``).
Without a GPU, ``TRITON_INTERPRET=1`` then lets the CUDA tables and ``--check``
run the Triton kernels on CPU tensors under the interpreter (timings
meaningless, values checked as on a GPU).

Usage:
    python tools/benchmark_ops.py [--ops-from-source] [--threads 1] [--chunks 32,64]
    python tools/benchmark_ops.py --device cuda [--peak-gbps 3350]
    python tools/benchmark_ops.py --device cuda --check
    TRITON_INTERPRET=1 python tools/benchmark_ops.py --smoke [--device cuda] [--check]
"""
import argparse
import importlib
import os
import platform
import statistics
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Spatial-Mamba-T at 224x224: stage i has d_inner = 128 * 2**i channels on
# (56 / 2**i)**2 pixels; blocks per stage.
T_STAGES = [(128 * 2 ** i, 56 >> i, 56 >> i, blocks) for i, blocks in enumerate([2, 4, 8, 4])]

# (name, batch, d_inner of stage 1, H, W of stage 1)
GPU_REGIMES = [
    ('classification 224x224', 64, 128, 56, 56),
    ('detection 1344x800', 2, 128, 336, 200),
    ('segmentation 512x512', 8, 128, 128, 128),
]
# (batch, D, H, W) of --check: a realistic size, odd sizes, H = 1, W = 1
CHECK_SHAPES = [(2, 64, 56, 56), (1, 32, 13, 7), (2, 16, 1, 9), (1, 8, 40, 1)]

# --smoke: the same tables and checks at interpreter-sized shapes
SMOKE_SCAN_SHAPE = (2, 8, 6, 5)
SMOKE_T_STAGES = [(8, 6, 5, 2), (16, 3, 3, 1)]
SMOKE_GPU_REGIMES = [('smoke 6x5', 2, 4, 6, 5)]
SMOKE_CHECK_SHAPES = [(1, 4, 6, 5), (2, 2, 1, 3)]

# Peak memory bandwidth, GB/s, by a substring of torch.cuda.get_device_name().
PEAK_GBPS = [('H200', 4800.0), ('H100 PCIe', 2000.0), ('H100', 3350.0),
             ('A100-SXM4-80GB', 2039.0), ('A100', 2000.0), ('L40S', 864.0),
             ('RTX 4090', 1008.0), ('V100', 900.0)]


def import_ops(from_source):
    """The ops package: installed ``mmspatial.ops``, or this checkout's ``ops/``."""
    if from_source:
        sys.path.insert(0, REPO_ROOT)
        return importlib.import_module('ops')
    try:
        return importlib.import_module('mmspatial.ops')
    except ImportError as error:
        raise SystemExit(f'cannot import mmspatial.ops ({error}); install the package '
                         '(pip install -e .) or pass --ops-from-source') from error


# ---------------------------------------------------------------------- inputs

def ssm_inputs(batch, channels, height, width, state_dim=1, dtype=torch.float32,
               device='cpu', channels_last=True, requires_grad=False, seed=0):
    """Inputs as the backbone passes them: channels-last (batch, D, H, W) u and
    delta, B and C (batch, N, H, W); step sizes in the initial range 1e-3..1e-1."""
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
    return (x['u'], x['delta'], x['A'], x['B'], x['C'], x['Dskip'], x['kernels'],
            x['alpha'], x['delta_bias'])


# ---------------------------------------------------------------------- timing

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


def time_side_by_side(fns, repeats, warmup=2):
    """Medians (and minima) of several functions timed in alternation, so that
    drifting machine load hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [(statistics.median(t), min(t)) for t in times]


def time_kernels(fn, repeats, warmup, device):
    """Median milliseconds of ``fn()``: CUDA events on a GPU, wall clock on CPU
    (the Triton interpreter of a smoke run)."""
    if device.type == 'cuda':
        return time_cuda(fn, repeats, warmup)
    return time_cpu(fn, repeats, warmup)[0] * 1e3


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


# ---------------------------------------------------------------------- CPU

def cpu_report(ops, args):
    scan_mod = importlib.import_module(ops.__name__ + '.selective_scan')
    fusion_mod = importlib.import_module(ops.__name__ + '.state_fusion')
    ssm_mod = importlib.import_module(ops.__name__ + '.structure_aware_ssm')
    lines = [f'### CPU: {platform.processor() or platform.machine()}, '
             f'{os.cpu_count()} cores, torch {torch.__version__}, '
             f'{torch.get_num_threads()} thread(s)', '']

    # 1. chunked scan vs the sequential loop, side by side
    scan_shape = SMOKE_SCAN_SHAPE if args.smoke else (2, 128, 56, 56)
    batch, channels, height, width = scan_shape
    x = ssm_inputs(*scan_shape, channels_last=False)
    u, delta, A, B, bias = scan_args(x)
    x_cl = ssm_inputs(*scan_shape, channels_last=True)
    u_cl, delta_cl, _, _, _ = scan_args(x_cl)
    with torch.no_grad():
        (ref_t, ref_min), (fast_t, fast_min), (fast_cl_t, fast_cl_min) = time_side_by_side([
            lambda: scan_mod.selective_scan_ref(u, delta, A, B, bias),
            lambda: scan_mod.selective_scan_chunked(u, delta, A, B, bias),
            lambda: scan_mod.selective_scan_chunked(u_cl, delta_cl, A, B, bias)],
            args.repeats)
    lines += [f'Selective scan, batch {batch}, D = {channels}, L = {height * width}, N = 1, '
              f'softplus on, forward, {args.repeats} runs of each, alternating:', '',
              '| implementation | median ms | min ms | speed-up (medians) | speed-up (minima) |',
              '|---|---|---|---|---|',
              f'| `selective_scan_ref` (sequential loop) | {ref_t * 1e3:.2f} | '
              f'{ref_min * 1e3:.2f} | 1.0x | 1.0x |',
              f'| `selective_scan_chunked`, (b, D, L) inputs | {fast_t * 1e3:.2f} | '
              f'{fast_min * 1e3:.2f} | {ref_t / fast_t:.1f}x | {ref_min / fast_min:.1f}x |',
              f'| `selective_scan_chunked`, channels-last inputs | {fast_cl_t * 1e3:.2f} | '
              f'{fast_cl_min * 1e3:.2f} | {ref_t / fast_cl_t:.1f}x | '
              f'{ref_min / fast_cl_min:.1f}x |', '']

    # 2. Spatial-Mamba-T stage shapes
    chunks = args.chunks or [scan_mod.CHUNK]
    stages = SMOKE_T_STAGES if args.smoke else T_STAGES
    lines += [('Smoke shapes' if args.smoke else 'Spatial-Mamba-T, batch 1 at 224x224') +
              ', PyTorch backend, channels-last inputs (ms per call, median of '
              f'{args.repeats}; x blocks = per stage):', '',
              '| stage | D | HxW | steps/chunk | scan | fusion | fused fwd | fused fwd+bwd '
              '| fused fwd x blocks |', '|---|---|---|---|---|---|---|---|---|']
    for chunk in chunks:
        chunk_label = 'auto' if chunk is None else chunk
        total_fwd = total_fwd_bwd = 0.0
        for stage, (channels, height, width, blocks) in enumerate(stages):
            x = ssm_inputs(1, channels, height, width)
            scan_in = scan_args(x)
            states = torch.randn(1, channels, height, width).contiguous(
                memory_format=torch.channels_last)
            with torch.no_grad():
                scan_t, _ = time_cpu(
                    lambda: scan_mod.selective_scan_chunked(*scan_in, chunk=chunk),
                    args.repeats)
                fusion_t, _ = time_cpu(
                    lambda: fusion_mod.state_fusion_torch(states, x['kernels'], x['alpha']),
                    args.repeats)
                fused_t, _ = time_cpu(
                    lambda: ssm_mod.structure_aware_ssm_torch(*fused_args(x), chunk=chunk),
                    args.repeats)
            xg = ssm_inputs(1, channels, height, width, requires_grad=True)
            fwd_bwd_t, _ = time_cpu(forward_backward(
                lambda *a: ssm_mod.structure_aware_ssm_torch(*a, chunk=chunk),
                fused_args(xg)), max(3, args.repeats // 2))
            total_fwd += blocks * fused_t
            total_fwd_bwd += blocks * fwd_bwd_t
            steps = scan_mod._chunking(height * width, chunk)[0]
            lines.append(f'| {stage + 1} | {channels} | {height}x{width} | {steps} | '
                         f'{scan_t * 1e3:.2f} | {fusion_t * 1e3:.2f} | {fused_t * 1e3:.2f} '
                         f'| {fwd_bwd_t * 1e3:.2f} | {blocks} x {fused_t * 1e3:.2f} = '
                         f'{blocks * fused_t * 1e3:.1f} |')
        lines.append(f'| all {sum(s[3] for s in stages)} blocks | | | {chunk_label} | | | | '
                     f'{total_fwd_bwd * 1e3:.1f} | '
                     f'**{total_fwd * 1e3:.1f}** |')
    lines.append('')
    return lines + backbone_share_report(ssm_mod, args)


def backbone_share_report(ssm_mod, args):
    """Share of the 18 SSM ops (scan + fusion + readout) in a Spatial-Mamba-T
    forward at 224x224, batch 1: the PyTorch backend's fused op against the
    loop-form reference composition, alternating forwards in one run."""
    try:
        from mmspatial.models.backbones.spatial_mamba import SpatialMamba
        layer_module = importlib.import_module('mmspatial.models.layers.structure_aware_ssm')
    except ImportError as error:
        return [f'(Backbone share skipped: mmspatial.models does not import: {error}.)', '']
    spent = [0.0]

    def timed(fn):
        def run(*inputs, **kwargs):
            start = time.perf_counter()
            out = fn(*inputs, **kwargs)
            spent[0] += time.perf_counter() - start
            return out
        return run

    def fast(*inputs, backend=None, **kwargs):
        return ssm_mod.structure_aware_ssm_torch(*inputs, **kwargs)

    variants = [('fused op, PyTorch backend', timed(fast)),
                ('`structure_aware_ssm_ref` (sequential-loop scan)',
                 timed(ssm_mod.structure_aware_ssm_ref))]
    torch.manual_seed(0)
    model = SpatialMamba(arch='T').eval()
    size = 64 if args.smoke else 224
    image = torch.randn(1, 3, size, size)
    original = layer_module.structure_aware_ssm
    totals = {name: ([], []) for name, _ in variants}
    repeats = max(5, args.repeats // 2)
    try:
        with torch.no_grad():
            for i in range(repeats + 2):
                for name, op in variants:
                    layer_module.structure_aware_ssm = op
                    spent[0] = 0.0
                    start = time.perf_counter()
                    model(image)
                    if i >= 2:        # warm-up
                        totals[name][0].append(time.perf_counter() - start)
                        totals[name][1].append(spent[0])
    finally:
        layer_module.structure_aware_ssm = original
    lines = ['Share of the 18 SSM ops (scan + fusion + readout) in a Spatial-Mamba-T '
             f'forward, batch 1 at {size}x{size}, medians of {repeats} forwards, the two '
             'variants alternating:', '',
             '| SSM op | T forward ms | 18 SSM ops ms | share |', '|---|---|---|---|']
    for name, (forward, op) in totals.items():
        forward_t, op_t = statistics.median(forward), statistics.median(op)
        lines.append(f'| {name} | {forward_t * 1e3:.1f} | {op_t * 1e3:.1f} | '
                     f'{100 * op_t / forward_t:.1f} % |')
    return lines + ['']


# ---------------------------------------------------------------------- CUDA

def bytes_moved(x, unfused, backward):
    """Compulsory memory traffic, bytes: every input read once, every output
    written once, per kernel, nothing cached across kernels.

    Fused forward: u, delta, B, C in, y (float32) out. Unfused forward: the scan
    writes float32 states that the fusion reads and writes fused again, which
    the readout reads with C and u. Backward: dy, the saved inputs in, one
    gradient per input out (the recomputation of the states in the backward of
    the fused op stays on chip in the model); unfused, the states, fused and
    their gradients go through memory once more each.
    """
    def size(t):
        return t.numel() * t.element_size()

    u, delta, B, C = x['u'], x['delta'], x['B'], x['C']
    states = u.numel() * x['A'].shape[1] * 4
    inputs = size(u) + size(delta) + size(B) + size(C)
    y = u.numel() * 4
    total = inputs + y
    if unfused:
        total += 4 * states            # states out, in; fused out, in
    if backward:
        total += y + inputs + inputs   # dy in; inputs again; gradients out
        if unfused:
            total += 6 * states        # states, fused, their gradients
    return total


def kernel_device(ops, args):
    """The device of the CUDA tables and ``--check``: the GPU, or the CPU for a
    smoke run under the Triton interpreter."""
    if torch.cuda.is_available():
        return torch.device('cuda')
    backend = importlib.import_module(ops.__name__ + '._backend')
    if args.smoke and backend.triton_interpreter_enabled():
        return torch.device('cpu')
    raise SystemExit('the CUDA tables and --check need a CUDA device (or, to check '
                     'the script only, --smoke with TRITON_INTERPRET=1)')


def device_label(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return 'CPU under the Triton interpreter (smoke run: timings meaningless)'


def peak_gbps(args, device):
    """Peak memory bandwidth, GB/s: ``--peak-gbps``, else by GPU name (None on CPU)."""
    if args.peak_gbps:
        return args.peak_gbps
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_GBPS:
        if key in name:
            return value
    raise SystemExit(f'no peak bandwidth known for {name!r}; pass --peak-gbps')


def cuda_report(ops, args, device):
    triton_ops = importlib.import_module(ops.__name__ + '.triton')
    ref = ops.structure_aware_ssm_ref
    peak = peak_gbps(args, device)
    peak_text = f'{peak:.0f} GB/s' if peak else 'unknown'
    lines = [f'### CUDA: {device_label(device)}, torch {torch.__version__}, '
             f'peak {peak_text} (median of {args.repeats} timings)', '',
             'Bytes: compulsory traffic (each tensor read or written once per kernel; '
             'see `bytes_moved`). GB/s and % of peak use the fused model\'s bytes for the '
             'fused op and the unfused model\'s for the others.', '',
             '| regime | dtype | implementation | fwd ms | fwd+bwd ms | fwd MB | '
             'fwd GB/s (% peak) | fwd vs ref | fwd+bwd vs ref |',
             '|---|---|---|---|---|---|---|---|---|']

    def unfused_triton(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias):
        batch, channels, height, width = u.shape
        state_dim = A.shape[1]
        states = triton_ops.selective_scan_triton(u.flatten(2), delta.flatten(2), A,
                                                  B.flatten(2), delta_bias, True)
        fused = triton_ops.state_fusion_triton(
            states.reshape(batch, channels * state_dim, height, width),
            kernels.repeat_interleave(state_dim, 1), alpha)
        fused = fused.view(batch, channels, state_dim, height, width)
        return (fused * C[:, None]).sum(2) + Dskip[:, None, None] * u

    torch_path = importlib.import_module(ops.__name__ + '.structure_aware_ssm')
    # (name, function, unfused in the bytes model, timed repeats, warm-up runs): the
    # reference loops over L with a few kernel launches per step, hence fewer runs
    impls = [('Triton fused', triton_ops.structure_aware_ssm_triton, False,
              args.repeats, 3),
             ('Triton unfused', unfused_triton, True, args.repeats, 3),
             ('PyTorch chunked (torch backend)', torch_path.structure_aware_ssm_torch, True,
              args.repeats, 3),
             ('PyTorch reference (loop + 3 conv2d + readout)', ref, True, 3, 1)]
    for name, batch, channels, height, width in (SMOKE_GPU_REGIMES if args.smoke
                                                 else GPU_REGIMES):
        for dtype in (torch.float32, torch.bfloat16):
            x = ssm_inputs(batch, channels, height, width, dtype=dtype, device=device)
            xg = ssm_inputs(batch, channels, height, width, dtype=dtype, device=device,
                            requires_grad=True)
            results = []
            for impl_name, fn, unfused, repeats, warmup in impls:
                repeats = min(repeats, args.repeats)
                with torch.no_grad():
                    fwd = time_kernels(lambda: fn(*fused_args(x)), repeats, warmup, device)
                fwd_bwd = time_kernels(forward_backward(fn, fused_args(xg)), repeats, warmup,
                                       device)
                results.append((impl_name, fwd, fwd_bwd, bytes_moved(x, unfused, False)))
            ref_fwd, ref_fwd_bwd = results[-1][1], results[-1][2]
            for impl_name, fwd, fwd_bwd, moved in results:
                gbps = moved / fwd / 1e6
                of_peak = f'{100 * gbps / peak:.0f}%' if peak else 'n/a'
                lines.append(f'| {name}, batch {batch} | {str(dtype)[6:]} | {impl_name} | '
                             f'{fwd:.3f} | {fwd_bwd:.3f} | {moved / 1e6:.1f} | '
                             f'{gbps:.0f} ({of_peak}) | '
                             f'{ref_fwd / fwd:.1f}x | {ref_fwd_bwd / fwd_bwd:.1f}x |')
    lines.append('')
    return lines


def cuda_check(ops, device, shapes):
    """Triton against the references on ``device``, (batch, D, H, W) ``shapes``;
    returns the list of failures."""
    triton_ops = importlib.import_module(ops.__name__ + '.triton')
    failures = []
    # The references run on float32 copies of the inputs, so their gradients are
    # float32: called on the low-precision leaves themselves, autograd would
    # round each use's gradient of u to the input dtype before summing them (an
    # error of up to two ulps in the reference). The kernels' gradients come
    # back in the input dtype (state_fusion's values too), and a low-precision
    # output makes its gradient low-precision: each rounding is half an ulp,
    # 2**-8 (bf16) or 2**-11 (fp16) relative, within the tolerances below.
    grad_rtol = {torch.float32: 1e-4, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}
    generator = torch.Generator(device=device).manual_seed(0)
    for dtype, rtol in grad_rtol.items():
        for shape in shapes:
            for state_dim in (1, 2):
                x = ssm_inputs(*shape, state_dim=state_dim, dtype=dtype, device=device,
                               requires_grad=True)
                x32 = {k: v.detach().float().requires_grad_() for k, v in x.items()}
                cases = [
                    ('structure_aware_ssm', triton_ops.structure_aware_ssm_triton,
                     ops.structure_aware_ssm_ref, fused_args(x), fused_args(x32)),
                    ('selective_scan',
                     lambda *a: triton_ops.selective_scan_triton(*a, True),
                     ops.selective_scan_ref, scan_args(x), scan_args(x32)),
                    ('state_fusion', triton_ops.state_fusion_triton, ops.state_fusion_ref,
                     (x['u'], x['kernels'], x['alpha']),
                     (x32['u'], x32['kernels'], x32['alpha'])),
                ]
                for name, fast, reference, inputs, inputs32 in cases:
                    label = f'{name} {str(dtype)[6:]} {shape} N={state_dim}'
                    out, expected = fast(*inputs), reference(*inputs32)
                    # one upstream gradient, as the output's dtype holds it
                    grad = torch.randn(expected.shape, generator=generator,
                                       device=device).to(out.dtype)
                    grads = torch.autograd.grad(
                        out, [t for t in inputs if t is not None and t.requires_grad], grad)
                    expected_grads = torch.autograd.grad(
                        expected, [t for t in inputs32 if t is not None], grad.float())
                    pairs = [('value', out, expected)] + [
                        (f'grad {i}', g, e)
                        for i, (g, e) in enumerate(zip(grads, expected_grads))]
                    for what, got, want in pairs:
                        # float32 values: tight; values in the input dtype
                        # (state_fusion) and gradients: that dtype's rounding
                        exact = what == 'value' and got.dtype == torch.float32
                        tol = (1e-4, 1e-5) if exact else (rtol, 1e-4)
                        got = got.float()
                        scale = want.abs().max().item()
                        ok = bool(torch.isfinite(got).all()) and torch.allclose(
                            got, want, rtol=tol[0], atol=tol[1] * scale + 1e-30)
                        status = 'ok' if ok else 'FAIL'
                        print(f'{status:4} {label} {what}: max |diff| '
                              f'{(got - want).abs().max().item():.3e} (scale {scale:.3e})')
                        if not ok:
                            failures.append(f'{label} {what}')
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ops-from-source', action='store_true',
                        help="import this checkout's ops/ instead of mmspatial.ops")
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='cpu: CPU tables only; cuda: CUDA tables only; auto: CPU, '
                             'plus CUDA when available')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (default 1: on a small shared machine, '
                             'OpenMP spin-waits make multi-thread timings erratic)')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--chunks', type=lambda s: [int(c) for c in s.split(',')],
                        help='comma-separated scan chunk lengths for the stage table')
    parser.add_argument('--peak-gbps', type=float,
                        help='peak memory bandwidth, GB/s (default: by device name)')
    parser.add_argument('--check', action='store_true',
                        help='compare Triton with the references on CUDA; exit 1 on failure')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny shapes, two repeats: check that the script runs (with '
                             'TRITON_INTERPRET=1 the CUDA parts run on CPU)')
    args = parser.parse_args()
    if args.smoke:
        args.repeats = min(args.repeats, 2)
    ops = import_ops(args.ops_from_source)
    torch.set_num_threads(args.threads)
    print(f'<!-- tools/benchmark_ops.py {" ".join(sys.argv[1:])}; ops from '
          f'{os.path.dirname(ops.__file__)} -->')
    if args.check:
        failures = cuda_check(ops, kernel_device(ops, args),
                              SMOKE_CHECK_SHAPES if args.smoke else CHECK_SHAPES)
        print(f'{len(failures)} failure(s)' + (': ' + ', '.join(failures) if failures else ''))
        sys.exit(1 if failures else 0)
    lines = []
    if args.device in ('auto', 'cpu'):
        lines += cpu_report(ops, args)
    if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available()):
        lines += cuda_report(ops, args, kernel_device(ops, args))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
