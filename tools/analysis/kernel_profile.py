"""Static GPU profile of the Triton kernels: what the launchers launch at a real
size, compiled ahead of time for a GPU that is not here, read from the binary.

Capture. The fused op's forward and backward run on ``meta`` tensors in a dry
run (``triton_launch.record_traffic(dry_run=True)``) while ``record_launches``
sees every launch: kernel, grid, arguments, meta-parameters and the bytes of
the traffic account. Nothing runs; any size fits on a CPU.

Compile. Each launch is specialised by the kernel's own binder (the code path
``JITFunction.run`` takes on a GPU: same signature, constexprs, divisibility
attributes and options, hence the same cache key) for a ``GPUTarget`` and
compiled with ``triton.compile``: ``sm_90a`` (H100/H200, Triton's bundled
ptxas) and ``gfx942`` (MI300, Triton's AMD backend).

Read. sm_90a: registers and stack frame from ``cuobjdump -res-usage``, spill
bytes (``STL``/``LDL`` widths), barriers (``BAR``) and instructions from
``cuobjdump -sass``; loops are the backward branches, and an instruction inside
loops counts once per iteration of each (trip counts from the launch's
arguments, :data:`TRIP_COUNTS`). gfx942: VGPRs, scratch and waves per SIMD
from the AMDGCN assembly's own notes.

Run as a script (``python tools/analysis/kernel_profile.py --worker``) it does
all of this in one process, with whatever ``triton`` is first on ``sys.path``,
and prints JSON records; ``kernel_report.py`` models and tabulates them.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TARGETS = {'sm_90a': ('cuda', 90, 32), 'gfx942': ('hip', 'gfx942', 64)}


def _cdiv(a, b):
    return -(-a // b)


def _mean_band_rows(height, rows):
    """Rows walked by the fusion backward's weights programs, their mean over
    the bands of ``rows`` rows (the last band may be shorter)."""
    return height / _cdiv(height, rows)


def _input_border_trips(a):
    """Mean trips per step of the input gradient's border loop: (side rows x
    steps on the first and last rows + steps holding a pixel of the border
    launch's sides) / steps, steps of STEP pixels counted per row."""
    height, width, step = a['H'], a['W'], a['STEP']
    row_steps = _cdiv(width, step)
    rows = a['ROW_TERMS'] * min(height, 5) * row_steps * 2    # one row: its steps take both
    if a['ROW_TERMS']:      # the steps holding the first or last column
        edge = height * min(row_steps, 2)
    else:                   # ... or a pixel of the first or last row
        edge = min(height, 2) * row_steps + max(height - 2, 0) * min(row_steps, 2)
    return (rows + edge) / (height * row_steps)


# Loops of each kernel's source: trip counts from the launch's bound arguments
# (name -> value), outermost first, by depth (per-program means, fractional
# where only some programs or steps enter a loop).
# Kernels not listed have no loop (their ``tl.static_range`` taps are unrolled).
TRIP_COUNTS = {
    '_scan_chunk_kernel': lambda a: [_cdiv(min(a['BLOCK_L'], a['L']), a['BLOCK_T'])],
    '_scan_bwd_chunk_kernel': lambda a: [_cdiv(min(a['BLOCK_L'], a['L']), a['BLOCK_T'])],
    '_scan_carry_kernel': lambda a: [_cdiv(a['n_chunks'], a['BLOCK_C'])],
    # the steps of a program's walk; the border loop, which only the steps on
    # the outer rows or columns enter: 5 rows' terms a step on the first and
    # last rows (when ROW_TERMS), one iteration for the border launch's terms
    '_fusion_bwd_input_kernel': lambda a: [
        a['L'] / _cdiv(a['L'], a['BLOCK_P']) / a['STEP'], _input_border_trips(a)],
    # the rows of a band, the steps along a row of its strip
    '_fusion_bwd_weights_kernel': lambda a: [
        _mean_band_rows(a['H'], a['ROWS']),
        _mean_band_rows(a['W'], a['BLOCK_W']) / a['STEP_W']],
    # the corner loop: 4 corners among the 2 x (row + column segments) programs
    # of an image and channel block
    '_fusion_bwd_border_kernel': lambda a: [4 / (2 * (a['n_row_segs'] + a['n_col_segs']))],
}
# Loops that compute what replicate padding adds at the border, outside the
# border launch: kernel -> (loop nest index, depth): the instructions of that
# nest at that depth and deeper
BORDER_LOOPS = {'_fusion_bwd_input_kernel': (0, 2)}
# The backward stencil's work inside another launch: kernel -> (the constexpr
# that turns it on, the arguments only that work reads or writes). Such a
# launch is also compiled with the constexpr off, the same arguments
# otherwise, for its instructions without that work (the fused op's adjoint
# scan, which forms the state fusion's weight sums and g_C).
STENCIL_WORK = {'_scan_bwd_chunk_kernel': ('FUSION', ('c_ptr', 's_part_ptr', 'gc_part_ptr'))}


# --------------------------------------------------------------------- capture

OPS = ('fused', 'scan', 'fusion')


def capture(regime, op='fused', dtype_name='bfloat16'):
    """[(pass, kernel, grid, args, meta, bytes read, bytes written)] of an op's
    forward and backward at ``regime`` (a ``mmspatial.kernel_traffic.Regime``), operands as the
    layer passes them: ``fused`` the SSM step; ``scan`` and ``fusion`` the
    unfused selective scan (N = 1) and state fusion (bf16 x, its own output)."""
    import torch

    from mmspatial.kernel_traffic import layer_inputs
    from mmspatial.ops.selective_scan.triton_backend import scan_backward, scan_forward
    from mmspatial.ops.state_fusion.triton_backend import (fold_tap_weights,
                                                           fusion_backward, fusion_forward)
    from mmspatial.ops.structure_aware_ssm.triton_backend import ssm_backward, ssm_forward
    from mmspatial.ops.triton_launch import (_nbytes, record_launches, record_traffic,
                                             sequence_view)
    dtype = getattr(torch, dtype_name)
    inputs = layer_inputs(regime.batch, regime.channels, regime.height, regime.width, dtype)
    u, delta, A, B, C, Dskip, kernels, alpha, bias = inputs
    launches = []

    def recorder(pass_):
        def record(kernel, grid, args, meta, reads, writes):
            launches.append((pass_, kernel, tuple(grid), args, dict(meta), _nbytes(reads),
                             _nbytes(writes)))
        return record

    def run(pass_, fn):
        with record_traffic(dry_run=True), record_launches(recorder(pass_)):
            return fn()
    if op == 'fused':
        y, states = run('fwd', lambda: ssm_forward(*inputs, True))
        run('bwd', lambda: ssm_backward(torch.empty_like(y), states, *inputs, True))
    elif op == 'scan':
        args = (sequence_view(u), sequence_view(delta), A, sequence_view(B), bias)
        states = run('fwd', lambda: scan_forward(*args))
        run('bwd', lambda: scan_backward(torch.empty_like(states), states, *args))
    elif op == 'fusion':
        weights = fold_tap_weights(kernels, alpha)
        out = torch.empty_like(u, memory_format=torch.channels_last)
        x, h, w = sequence_view(u), regime.height, regime.width
        run('fwd', lambda: fusion_forward(x, weights, h, w, sequence_view(out)))
        run('bwd', lambda: fusion_backward(sequence_view(out), x, weights, h, w,
                                           sequence_view(torch.empty_like(out))))
    else:
        raise ValueError(f'unknown op {op!r}; known: {OPS}')
    return launches


# --------------------------------------------------------------------- compile

def specialise(kernel, args, meta, target):
    """(key, source, options) as ``JITFunction.run`` would make them on ``target``:
    ``key`` identifies the specialisation (signature, constexprs, attributes,
    options), ``source`` is the ``ASTSource`` to compile."""
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(meta)
    kwargs['debug'] = kwargs.get('debug', kernel.debug) or knobs.runtime.debug
    kwargs['instrumentation_mode'] = knobs.compilation.instrumentation_mode
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                              specialization, options)
    key = json.dumps([kernel.fn.__name__, str(target), signature,
                      sorted((str(k), str(v)) for k, v in constexprs.items()),
                      sorted((str(k), str(v)) for k, v in attrs.items()),
                      sorted((k, str(v)) for k, v in options.__dict__.items())])
    return key, ASTSource(kernel, signature, constexprs, attrs), options, bound


def gpu_target(name):
    from triton.backends.compiler import GPUTarget
    return GPUTarget(*TARGETS[name])


# ------------------------------------------------------------------------ read

_SASS_LINE = re.compile(r'/\*([0-9a-f]{4,})\*/\s+(.*?);')
_LABEL = re.compile(r'^\s*(\.L_x_\d+):')
_STORE_WIDTH = {'': 4, '.U8': 1, '.S8': 1, '.U16': 2, '.S16': 2, '.64': 8, '.128': 16}


def _nvidia_tool(name):
    import triton
    return str(Path(triton.__file__).parent / 'backends' / 'nvidia' / 'bin' / name)


def sass_stats(cubin, trip_counts=()):
    """Registers, stack, spills, barriers and instruction counts of a cubin.

    Loops: each backward branch closes a loop over [target, branch]; nested
    loops get the trip counts of ``trip_counts`` (outermost first) by depth
    (a source loop the compiler unrolled, innermost first, is already repeated
    in the code). ``nest_instr`` gives each top-level loop nest's dynamic
    instructions, ``depth_instr`` each nest's per depth (from 1);
    ``loops_matched`` says whether the depths of the largest nest agree with
    the trip counts.
    """
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_nvidia_tool('cuobjdump'), '-res-usage', f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_nvidia_tool('cuobjdump'), '-sass', f.name],
                              capture_output=True, text=True, check=True).stdout
    res = dict(re.findall(r'(REG|STACK|SHARED|LOCAL):(\d+)', usage))
    instructions, labels, pending = [], {}, []
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        match = _SASS_LINE.search(line)
        if not match:
            continue
        address, text = int(match.group(1), 16), match.group(2).strip()
        for name in pending:
            labels[name] = address
        pending = []
        text = re.sub(r'^@!?U?P\w+\s+', '', text)          # predicate
        instructions.append((address, text.split()[0], text))
    # the code ends before the self-branch that follows it (then padding); a
    # loop whose exit is an EXIT closes with a backward branch after that EXIT
    def branch_target(op, text):
        target = re.search(r'BRA\S*\s+(?:`\((\.L_x_\d+)\)|(0x[0-9a-f]+))', text)
        if op.startswith('BRA') and target:
            return labels.get(target.group(1)) if target.group(1) else int(target.group(2), 16)
        return None
    end = max(i for i, (_, op, _) in enumerate(instructions) if op == 'EXIT')
    for i in range(end + 1, len(instructions)):
        address, op, text = instructions[i]
        if op == 'NOP' or branch_target(op, text) == address:
            break
        end = i
    body = instructions[:end + 1]
    loops = []
    for address, op, text in body:
        to = branch_target(op, text)
        if to is not None and to <= address:
            loops.append((to, address))
    loops.sort(key=lambda span: (span[0], -span[1]))

    def depth(address):
        return sum(1 for lo, hi in loops if lo <= address <= hi)

    def size(span):
        return sum(1 for address, _, _ in body if span[0] <= address <= span[1])
    nests = sorted(span for span in loops if depth(span[0]) == 1)
    main = max(nests, key=size, default=None)
    trips = list(trip_counts)

    def nest_of(address):
        return next((i for i, (lo, hi) in enumerate(nests) if lo <= address <= hi), None)

    def weight_of(address):
        d = depth(address)
        weight = 1
        for trip in (trips + [1] * d)[:d]:
            weight *= trip
        return weight

    def nest_depth(span):
        if span is None:
            return 0
        return max((depth(lo) for lo, hi in loops if span[0] <= lo <= span[1]), default=0)

    max_depth = nest_depth(main)
    loops_matched = max_depth == len(trips) or all(trip == 1 for trip in trips[max_depth:])
    depth_instr = [[] for _ in nests]       # per nest, per depth from 1
    dynamic = barriers = dynamic_barriers = 0
    spill_store = spill_load = 0
    for address, op, text in body:
        nest = nest_of(address)
        weight = weight_of(address)
        dynamic += weight
        if nest is not None:
            levels = depth_instr[nest]
            levels += [0.0] * (depth(address) - len(levels))
            levels[depth(address) - 1] += weight
        if op.startswith('BAR'):
            barriers += 1
            dynamic_barriers += weight
        if op.startswith('STL') or op.startswith('LDL'):
            width = _STORE_WIDTH.get(op[3:], 4)
            if op.startswith('STL'):
                spill_store += width
            else:
                spill_load += width
    return dict(regs=int(res.get('REG', 0)), stack_bytes=int(res.get('STACK', 0)),
                spill_bytes=spill_store, spill_load_bytes=spill_load,
                smem_bytes=int(res.get('SHARED', 0)), static_instr=len(body),
                dynamic_instr=dynamic, barriers=barriers, dynamic_barriers=dynamic_barriers,
                sass_loops=len(loops), loop_depth=max_depth,
                nest_instr=[sum(levels) for levels in depth_instr],
                depth_instr=depth_instr, loops_matched=loops_matched)


def amdgcn_stats(asm):
    """VGPRs, SGPRs, scratch (spill) bytes, LDS and waves per SIMD of an AMDGCN kernel."""
    def note(pattern, default=0):
        found = re.search(pattern, asm)
        return int(found.group(1)) if found else default
    vgprs = note(r'\.vgpr_count:\s+(\d+)')
    return dict(regs=vgprs, vgprs=vgprs, sgprs=note(r'\.sgpr_count:\s+(\d+)'),
                vgpr_spill_count=note(r'\.vgpr_spill_count:\s+(\d+)'),
                sgpr_spill_count=note(r'\.sgpr_spill_count:\s+(\d+)'),
                spill_bytes=note(r'; ScratchSize: (\d+)'),
                smem_bytes=note(r'; LDSByteSize: (\d+)'),
                waves_per_simd=note(r'; Occupancy: (\d+)'))


# ---------------------------------------------------------------------- worker

def cpu_seconds():
    """CPU seconds of this process and its finished children (ptxas, ld.lld)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def profile(regimes, targets, ops=('fused',), log=print):
    """Records of every launch of ``ops`` at ``regimes`` compiled for ``targets``,
    with the triton this process imports; each distinct specialisation compiles
    once, and its SASS is weighed by the trip counts of each launch (launches of
    one specialisation may differ in the runtime arguments that set them)."""
    import triton
    compiled = {}
    weighed = {}
    records = []
    for regime, op in [(r, op) for r in regimes for op in ops]:
        launches = capture(regime, op)
        elements = regime.batch * regime.channels * regime.height * regime.width
        for pass_, kernel, grid, args, meta, read, written in launches:
            name = kernel.fn.__name__
            flag, only_its = STENCIL_WORK.get(name, (None, ()))
            stencil_work = bool(flag and meta.get(flag))
            for target_name in targets:
                key, source, options, bound = specialise(kernel, args, meta,
                                                         gpu_target(target_name))
                if key not in compiled:
                    start = cpu_seconds()
                    binary = triton.compile(source, target=gpu_target(target_name),
                                            options=options.__dict__)
                    seconds = cpu_seconds() - start
                    compiled[key] = (binary, round(seconds, 2))
                    log(f'[kernel_profile] {triton.__version__} {target_name} {name} '
                        f'{regime.name}: {seconds:.1f} s')
                binary, seconds = compiled[key]
                trips = tuple(TRIP_COUNTS.get(name, lambda a: [])(bound))
                if (key, trips) not in weighed:
                    if target_name == 'sm_90a':
                        stats = sass_stats(binary.asm['cubin'], trips)
                        nest, depth = BORDER_LOOPS.get(name, (None, 0))
                        stats['border_dynamic_instr'] = sum(
                            stats['depth_instr'][nest][depth - 1:]
                            if nest is not None and nest < len(stats['depth_instr']) else ())
                    else:
                        stats = amdgcn_stats(binary.asm['amdgcn'])
                    stats.update(smem_bytes=max(stats['smem_bytes'], binary.metadata.shared),
                                 compile_cpu_s=seconds)
                    if target_name == 'sm_90a' and stencil_work:
                        _, free_source, free_options, _ = specialise(
                            kernel, args, {**meta, flag: False}, gpu_target(target_name))
                        free = triton.compile(free_source, target=gpu_target(target_name),
                                              options=free_options.__dict__)
                        stats['stencil_free_dynamic_instr'] = sass_stats(
                            free.asm['cubin'], trips)['dynamic_instr']
                    weighed[key, trips] = stats
                programs = grid[0] * (grid[1] if len(grid) > 1 else 1) * \
                    (grid[2] if len(grid) > 2 else 1)
                stencil = {}
                if stencil_work:
                    stencil['stencil_bytes'] = sum(bound[n].numel() * bound[n].element_size()
                                                   for n in only_its)
                records.append(dict(
                    kernel=name, op=op, regime=regime.name, target=target_name,
                    triton=triton.__version__, num_warps=meta.get('num_warps', 4),
                    grid=list(grid), programs=programs, elements=elements,
                    bytes=read + written, specialisation=key,
                    constexprs={k: v for k, v in meta.items() if k.isupper()},
                    **{'pass': pass_}, **stencil, **weighed[key, trips]))
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--worker', action='store_true', required=True)
    parser.add_argument('--regimes', nargs='+', required=True)
    parser.add_argument('--targets', nargs='+', default=list(TARGETS))
    parser.add_argument('--ops', nargs='+', default=['fused'], choices=OPS)
    parser.add_argument('--json', type=Path, required=True)
    args = parser.parse_args()
    from mmspatial.kernel_traffic import regime
    records = profile([regime(name) for name in args.regimes], args.targets, args.ops,
                      log=lambda line: print(line, file=sys.stderr, flush=True))
    from mmspatial.fileio.atomic import atomic_write_text
    atomic_write_text(args.json, json.dumps(records))


if __name__ == '__main__':
    os.environ.pop('TRITON_INTERPRET', None)
    main()
