"""First contact with a GPU: the compile work of each ``tools/gpu_check.py`` step,
measured on a CPU, and a warm Triton cache for the GPU image built here.

    # per step: new sm_90a specialisations and CPU seconds to compile them cold
    python tools/analysis/first_contact.py --measure --cache-dir DIR [--json OUT]
    # the same launches through JITFunction.run (a GPU's code path, with a driver
    # that reports an H200's target): every one must be a hit in DIR
    python tools/analysis/first_contact.py --check-warm --cache-dir DIR

Run both with the GPU image's triton first on ``PYTHONPATH`` (3.6). Steps, as
``gpu_check`` runs them, each launch of its ops replayed on ``meta`` tensors in
a dry run (``kernel_profile``'s capture) at the step's shapes and dtypes:

- ``tests``: ``tests/ops/test_triton_kernels.py``, recorded launch by launch
  from a run under the interpreter (``--record-tests``), plus its sm_90a
  compile test's specialisations and its CUDA section's shapes (not the
  inductor test's own generated kernels);
- ``check``: the fused op at detection stage 1 in float32, bfloat16 and float16,
  the unfused ops in bfloat16; ``time``: the fused op at the stage-1 regimes;
- ``backbone``: the layer's launches at every stage of Spatial-Mamba-T at
  224x224 batch 128 and 800x1344 batch 2; ``amp``: 224x224 batch 16, float16;
- ``sweep``: detection stage 1, one setting changed at a time;
- ``probe`` (not a step): the fused op at 2x16x12x14, every kernel, seconds.

A specialisation counts for the first step that launches it (the steps share
the cache). The Triton cache key (``triton.compiler.compile``) is the triton
build (``triton_key``), the kernel's source and specialisation, the backend
(ptxas version and arch) and options, and the cache-invalidating environment:
nothing of the device beyond the target ``cuda:90``.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from kernel_profile import REPO_ROOT, cpu_seconds, gpu_target, specialise

# gpu_check's steps in order with their limits (tools/gpu_check.py STEPS)
STEP_ORDER = ('env', 'tests', 'check', 'traffic', 'time', 'backbone', 'amp', 'sweep')


# ------------------------------------------------------------ launch descriptions

def describe(args):
    """A JSON form of launch arguments: tensors by dtype and 16-byte alignment."""
    out = []
    for a in args:
        if hasattr(a, 'data_ptr'):
            out.append({'dtype': str(a.dtype).replace('torch.', ''),
                        'aligned': a.data_ptr() % 16 == 0})
        else:
            out.append(a)
    return out


def rebuild(described):
    """Arguments that specialise as the described ones (``meta`` tensors)."""
    import torch
    args = []
    for a in described:
        if isinstance(a, dict):
            t = torch.empty(64, dtype=getattr(torch, a['dtype']), device='meta')
            args.append(t if a['aligned'] else t[1:])
        else:
            args.append(a)
    return args


def record_tests(out_json):
    """Run the Triton tests under the interpreter, recording every launch."""
    import subprocess
    env = dict(os.environ, TRITON_INTERPRET='1', MMSPATIAL_RECORD_LAUNCHES=str(out_json))
    env['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).resolve().parent),
                                         str(REPO_ROOT), env.get('PYTHONPATH', '')])
    return subprocess.run([sys.executable, '-m', 'pytest', 'tests/ops/test_triton_kernels.py',
                           '-q', '-p', 'first_contact', '-p', 'no:cacheprovider'],
                          cwd=REPO_ROOT, env=env).returncode


def pytest_configure(config):
    """(pytest plugin, ``-p first_contact``) record launches to
    ``$MMSPATIAL_RECORD_LAUNCHES`` as JSON lines."""
    path = os.environ.get('MMSPATIAL_RECORD_LAUNCHES')
    if not path:
        return
    from mmspatial.ops import triton_launch
    sink = open(path, 'w')

    def record(kernel, grid, args, meta, reads, writes):
        sink.write(json.dumps(dict(kernel=kernel.fn.__name__, grid=list(grid),
                                   args=describe(args), meta=meta)) + '\n')
        sink.flush()
    triton_launch._launch_recorders.append(record)


# ----------------------------------------------------------------- step captures

def _launches(fn):
    """[(kernel, args, meta)] that ``fn()`` launches, in a dry run."""
    from mmspatial.ops.triton_launch import record_launches, record_traffic
    found = []
    with record_traffic(dry_run=True), record_launches(
            lambda kernel, grid, args, meta, reads, writes: found.append(
                (kernel, list(args), dict(meta)))):
        fn()
    return found


def _fused_fwd_bwd(batch, channels, height, width, dtype):
    """The fused op's forward and backward on gpu_check's inputs (``ssm_inputs``:
    channels-last u and delta, contiguous B and C)."""
    import torch

    from mmspatial.benchmarking import fused_args, ssm_inputs
    from mmspatial.ops.structure_aware_ssm.triton_backend import structure_aware_ssm_triton

    def run():
        x = ssm_inputs(batch, channels, height, width, dtype=dtype, device='meta',
                       requires_grad=True)
        y = structure_aware_ssm_triton(*fused_args(x))
        torch.autograd.grad(y, list(x.values()), torch.empty_like(y))
    return _launches(run)


def _layer_fwd_bwd(regime, dtype):
    """The fused op's launches on the layer's operands (``kernel_profile.capture``)."""
    from kernel_profile import capture
    return [(k, list(a), m) for _, k, _, a, m, _, _ in capture(
        regime, 'fused', str(dtype).replace('torch.', ''))]


def step_launches(step, tests_json=None):
    """[(kernel, args, meta)] of one gpu_check step at full size."""
    import torch

    from mmspatial.kernel_traffic import REGIMES, STAGE_ONE, Regime
    from mmspatial.ops.triton_launch import override_config
    stage1 = STAGE_ONE[0]
    if step == 'tests':
        from mmspatial.ops.selective_scan import triton_backend as ss
        from mmspatial.ops.state_fusion import triton_backend as sf
        kernels = {name: getattr(module, name) for module in (ss, sf)
                   for name in dir(module) if name.endswith('_kernel')}
        launches = []
        for line in Path(tests_json).read_text().splitlines():
            r = json.loads(line)
            launches.append((kernels[r['kernel']], rebuild(r['args']), r['meta']))
        # test_kernels_compile_for_sm90 (it compiles in a subprocess, same cache)
        from kernel_profile import capture
        for op in ('fused', 'scan', 'fusion'):
            launches += [(k, list(a), m) for _, k, _, a, m, _, _ in capture(stage1, op)]
        # the CUDA section's shapes (compiled kernels, default blocks)
        for dtype in (torch.float32, torch.bfloat16):
            launches += _fused_fwd_bwd(2, 64, 40, 44, dtype)
        for size in ((2, 32, 20, 24), (2, 16, 12, 14)):
            launches += _fused_fwd_bwd(*size, torch.bfloat16)
        return launches
    if step == 'check':
        launches = []
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            launches += _fused_fwd_bwd(*stage1[1:], dtype)
        from kernel_profile import capture
        for op in ('scan', 'fusion'):
            launches += [(k, list(a), m) for _, k, _, a, m, _, _ in capture(stage1, op)]
        return launches
    if step == 'time':
        return [x for r in STAGE_ONE for x in _fused_fwd_bwd(*r[1:], torch.bfloat16)]
    if step == 'backbone':
        return [x for r in REGIMES if r.name.startswith(('detection 800x1344 b2 T',
                                                          'classification 224x224 b128 T'))
                for x in _layer_fwd_bwd(r, torch.bfloat16)]
    if step == 'amp':
        amp = [Regime(f'amp s{s + 1}', 16, 128 << s, -(-56 // (1 << s)), -(-56 // (1 << s)))
               for s in range(4)]
        return [x for r in amp for x in _layer_fwd_bwd(r, torch.float16)]
    if step == 'probe':             # not a step: every kernel once, at a small size
        return _fused_fwd_bwd(2, 16, 12, 14, torch.bfloat16)
    if step == 'sweep':
        gpu_check = _gpu_check()
        launches = []
        for key, values in _sweep_choices(gpu_check).items():
            for value in values:
                with override_config(**{key: value}):
                    launches += _fused_fwd_bwd(*stage1[1:], torch.bfloat16)
        return launches
    return []


def _gpu_check():
    """``tools/gpu_check.py`` as a module (its step limits and sweep settings)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('gpu_check', REPO_ROOT / 'tools' /
                                                  'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep_choices(gpu_check):
    """The sweep's settings, read from gpu_check's source (one place)."""
    import ast
    import inspect
    source = inspect.getsource(gpu_check.step_sweep)
    start = source.index('choices = ')
    return ast.literal_eval(source[start + len('choices = '):source.index('}', start) + 1])


# ------------------------------------------------------------------- measuring

def measure(steps, tests_json, log):
    """{step: dict(launches, new, cpu_s, limit_s)}: each step's new sm_90a
    specialisations, compiled cold (into $TRITON_CACHE_DIR) one by one."""
    import triton
    STEPS = _gpu_check().STEPS
    target = gpu_target('sm_90a')
    seen, out = set(), {}
    for step in steps:
        launches = step_launches(step, tests_json)
        new, seconds = 0, 0.0
        for kernel, args, meta in launches:
            key, source, options, _ = specialise(kernel, args, meta, target)
            if key in seen:
                continue
            seen.add(key)
            start = cpu_seconds()
            triton.compile(source, target=target, options=options.__dict__)
            seconds += cpu_seconds() - start
            new += 1
        out[step] = dict(launches=len(launches), new=new, cpu_s=round(seconds, 1),
                         limit_s=STEPS.get(step))
        log(f'[first_contact] {step}: {len(launches)} launches, {new} new '
            f'specialisations, {seconds:.0f} CPU s (limit {STEPS.get(step)} s)')
    return out


class H200Driver:
    """Just enough of a CUDA driver for ``JITFunction.run(warmup=True)``: the
    target an H200 reports, device 0, stream 0. Nothing launches."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget('cuda', 90, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch
        return torch.device('meta')


def check_warm(steps, tests_json):
    """[(kernel, step)] of launches that the cache in $TRITON_CACHE_DIR misses on
    the JIT path a GPU takes (``JITFunction.run`` with ``warmup=True``)."""
    from triton.compiler import compiler
    from triton.runtime.driver import driver
    driver.set_active(H200Driver())
    misses = []

    def no_compile(*args, **kwargs):
        raise LookupError('cache miss')
    compiler.ASTSource.make_ir = no_compile          # a miss would have to build IR
    for step in steps:
        for kernel, args, meta in step_launches(step, tests_json):
            try:
                kernel.run(*args, grid=(1,), warmup=True, **meta)
            except LookupError:
                misses.append((kernel.fn.__name__, step))
    return misses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument('--measure', action='store_true')
    mode.add_argument('--check-warm', action='store_true')
    mode.add_argument('--record-tests', type=Path, metavar='JSONL')
    parser.add_argument('--steps', nargs='+', default=[s for s in STEP_ORDER if s not in
                                                       ('env', 'traffic')])
    parser.add_argument('--tests-json', type=Path,
                        help="the tests step's launches (from --record-tests)")
    parser.add_argument('--cache-dir', type=Path)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    if args.record_tests:
        sys.exit(record_tests(args.record_tests.resolve()))
    if 'tests' in args.steps and not args.tests_json:
        parser.error('the tests step needs --tests-json (make it with --record-tests)')
    if args.cache_dir:
        os.environ['TRITON_CACHE_DIR'] = str(args.cache_dir)
    os.environ.pop('TRITON_INTERPRET', None)
    if args.measure:
        result = measure(args.steps, args.tests_json,
                         lambda line: print(line, file=sys.stderr, flush=True))
        text = json.dumps(result, indent=1)
        if args.json:
            from mmspatial.fileio.atomic import atomic_write_text
            atomic_write_text(args.json, text)
        print(text)
    else:
        misses = check_warm(args.steps, args.tests_json)
        print(json.dumps(dict(misses=misses)))
        sys.exit(1 if misses else 0)


if __name__ == '__main__':
    main()
