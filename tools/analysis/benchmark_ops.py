"""Operator level: time the PyTorch backend of the structure-aware SSM
operators on the CPU; print markdown for benchmarks/RESULTS.md.

  * the chunked scan against the sequential loop of ``selective_scan_ref`` at
    L = 3136, D = 128, batch 2, N = 1, side by side;
  * forward (and fused forward + backward) times at the shapes of
    Spatial-Mamba-T's four stages, batch 1 at 224x224;
  * ``--chunks 16,32,64,128``: the same for several chunk lengths (to check
    ``selective_scan.torch_backend.default_chunk``);
  * the share of the 18 SSM ops in a Spatial-Mamba-T forward at 224x224, for
    the PyTorch backend and for the sequential-loop reference, side by side
    (needs ``mmspatial.models``, so mmengine; skipped with a note otherwise).

The Triton kernels are checked and timed on a GPU by ``tools/gpu_check.py``;
whole backbones side by side by ``benchmark_backbone.py``, a config's model by
``benchmark_model.py``. ``--smoke``: every table at tiny shapes with two
repeats, to check that the script runs (CI does,
``tests/tools/test_benchmark_ops.py``). Progress goes to stderr, the markdown
to stdout.

Usage:
    python tools/analysis/benchmark_ops.py [--threads 1] [--chunks 32,64] [--smoke]
"""
import os
import platform
import statistics
import sys
import time

import torch

from mmspatial.benchmarking import (forward_backward, fused_args, progress, scan_args,
                                    ssm_inputs, time_cpu, time_side_by_side)
from mmspatial.ops import selective_scan_ref, structure_aware_ssm_ref
from mmspatial.ops.selective_scan.torch_backend import (CHUNK, _chunking,
                                                        selective_scan_torch)
from mmspatial.ops.state_fusion.torch_backend import state_fusion_torch
from mmspatial.ops.structure_aware_ssm.torch_backend import structure_aware_ssm_torch
from mmspatial.utils import run_tool, tool_parser

# Spatial-Mamba-T at 224x224: stage i has d_inner = 128 * 2**i channels on
# (56 / 2**i)**2 pixels; blocks per stage.
T_STAGES = [(128 * 2 ** i, 56 >> i, 56 >> i, blocks) for i, blocks in enumerate([2, 4, 8, 4])]

# --smoke: the same tables at tiny shapes
SMOKE_SCAN_SHAPE = (2, 8, 6, 5)
SMOKE_T_STAGES = [(8, 6, 5, 2), (16, 3, 3, 1)]


def cpu_report(args):
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
    with torch.no_grad(), progress(args.repeats, 'selective scan, rounds:') as update:
        (ref_t, ref_min), (fast_t, fast_min), (fast_cl_t, fast_cl_min) = time_side_by_side([
            lambda: selective_scan_ref(u, delta, A, B, bias),
            lambda: selective_scan_torch(u, delta, A, B, bias),
            lambda: selective_scan_torch(u_cl, delta_cl, A, B, bias)],
            args.repeats, on_round=update)
    lines += [f'Selective scan, batch {batch}, D = {channels}, L = {height * width}, N = 1, '
              f'softplus on, forward, {args.repeats} runs of each, alternating:', '',
              '| implementation | median ms | min ms | speed-up (medians) | speed-up (minima) |',
              '|---|---|---|---|---|',
              f'| `selective_scan_ref` (sequential loop) | {ref_t * 1e3:.2f} | '
              f'{ref_min * 1e3:.2f} | 1.0x | 1.0x |',
              f'| `selective_scan_torch`, (b, D, L) inputs | {fast_t * 1e3:.2f} | '
              f'{fast_min * 1e3:.2f} | {ref_t / fast_t:.1f}x | {ref_min / fast_min:.1f}x |',
              f'| `selective_scan_torch`, channels-last inputs | {fast_cl_t * 1e3:.2f} | '
              f'{fast_cl_min * 1e3:.2f} | {ref_t / fast_cl_t:.1f}x | '
              f'{ref_min / fast_cl_min:.1f}x |', '']

    # 2. Spatial-Mamba-T stage shapes
    chunks = args.chunks or [CHUNK]
    stages = SMOKE_T_STAGES if args.smoke else T_STAGES
    lines += [('Smoke shapes' if args.smoke else 'Spatial-Mamba-T, batch 1 at 224x224') +
              ', PyTorch backend, channels-last inputs (ms per call, median of '
              f'{args.repeats}; x blocks = per stage):', '',
              '| stage | D | HxW | steps/chunk | scan | fusion | fused fwd | fused fwd+bwd '
              '| fused fwd x blocks |', '|---|---|---|---|---|---|---|---|---|']
    with progress(len(chunks) * len(stages), 'stage shapes, stages:') as update:
        lines += stage_rows(args, chunks, stages, update)
    lines.append('')
    return lines + backbone_share_report(args)


def stage_rows(args, chunks, stages, update):
    """The stage table's rows for each chunk length; ``update()`` after each row."""
    lines = []
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
                    lambda: selective_scan_torch(*scan_in, chunk=chunk),
                    args.repeats)
                fusion_t, _ = time_cpu(
                    lambda: state_fusion_torch(states, x['kernels'], x['alpha']),
                    args.repeats)
                fused_t, _ = time_cpu(
                    lambda: structure_aware_ssm_torch(*fused_args(x), chunk=chunk),
                    args.repeats)
            xg = ssm_inputs(1, channels, height, width, requires_grad=True)
            fwd_bwd_t, _ = time_cpu(forward_backward(
                lambda *a: structure_aware_ssm_torch(*a, chunk=chunk),
                fused_args(xg)), max(3, args.repeats // 2))
            total_fwd += blocks * fused_t
            total_fwd_bwd += blocks * fwd_bwd_t
            steps = _chunking(height * width, chunk)[0]
            lines.append(f'| {stage + 1} | {channels} | {height}x{width} | {steps} | '
                         f'{scan_t * 1e3:.2f} | {fusion_t * 1e3:.2f} | {fused_t * 1e3:.2f} '
                         f'| {fwd_bwd_t * 1e3:.2f} | {blocks} x {fused_t * 1e3:.2f} = '
                         f'{blocks * fused_t * 1e3:.1f} |')
            update()
        lines.append(f'| all {sum(s[3] for s in stages)} blocks | | | {chunk_label} | | | | '
                     f'{total_fwd_bwd * 1e3:.1f} | '
                     f'**{total_fwd * 1e3:.1f}** |')
    return lines


def backbone_share_report(args):
    """Share of the 18 SSM ops (scan + fusion + readout) in a Spatial-Mamba-T
    forward at 224x224, batch 1: the PyTorch backend's fused op against the
    loop-form reference composition, alternating forwards in one run."""
    from mmspatial.models.backbones.spatial_mamba import SpatialMamba
    from mmspatial.models.layers import structure_aware_ssm as layer_module
    spent = [0.0]

    def timed(fn):
        def run(*inputs, **kwargs):
            start = time.perf_counter()
            out = fn(*inputs, **kwargs)
            spent[0] += time.perf_counter() - start
            return out
        return run

    def fast(*inputs, backend=None, **kwargs):
        return structure_aware_ssm_torch(*inputs, **kwargs)

    variants = [('fused op, PyTorch backend', timed(fast)),
                ('`structure_aware_ssm_ref` (sequential-loop scan)',
                 timed(structure_aware_ssm_ref))]
    torch.manual_seed(0)
    model = SpatialMamba(arch='T').eval()
    size = 64 if args.smoke else 224
    image = torch.randn(1, 3, size, size)
    original = layer_module.structure_aware_ssm
    totals = {name: ([], []) for name, _ in variants}
    repeats = max(5, args.repeats // 2)
    try:
        with torch.no_grad(), progress(repeats + 2, 'SSM share in a T forward, rounds '
                                       '(2 warm-up):') as update:
            for i in range(repeats + 2):
                for name, op in variants:
                    layer_module.structure_aware_ssm = op
                    spent[0] = 0.0
                    start = time.perf_counter()
                    model(image)
                    if i >= 2:        # warm-up
                        totals[name][0].append(time.perf_counter() - start)
                        totals[name][1].append(spent[0])
                update()
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


def parse_args(argv=None):
    parser = tool_parser(description='Time the SSM operators on the CPU (markdown)')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (default 1: on a small shared machine, '
                             'OpenMP spin-waits make multi-thread timings erratic)')
    parser.add_argument('--repeats', type=int, default=20,
                        help='timed calls per measurement (default 20)')
    parser.add_argument('--chunks', type=lambda s: [int(c) for c in s.split(',')],
                        help='comma-separated scan chunk lengths for the stage table')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny shapes, two repeats: check that the script runs')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error('--repeats and --threads must be positive')
    if args.smoke:
        args.repeats = min(args.repeats, 2)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    argv = sys.argv[1:] if argv is None else argv
    lines = [f'<!-- tools/analysis/benchmark_ops.py {" ".join(argv)} -->'] + cpu_report(args)
    print('\n'.join(lines))
    return lines


if __name__ == '__main__':
    run_tool(main, __file__)
