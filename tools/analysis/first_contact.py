"""First contact with a GPU: each ``tools/gpu_check.py`` step's kernels compiled
before the step launches them, in parallel, and that compile work measured here.

    # per step: new sm_90a specialisations, compile CPU seconds, wall seconds on
    # N worker processes (cold, into DIR)
    python tools/analysis/first_contact.py --measure --cache-dir DIR [--workers N] [--json OUT]
    # the same launches through JITFunction.run (a GPU's code path, with a driver
    # that reports an H200's target): every one must be a hit in DIR (and, as a
    # control, a miss in the empty EMPTY)
    python tools/analysis/first_contact.py --check-warm --cache-dir DIR [--control-cache-dir EMPTY]
    # after a change to the kernels, launchers or tests/ops/test_triton_kernels.py:
    # re-record that file's launches (an interpreter run, minutes)
    python tools/analysis/first_contact.py --record-tests

Run the first two with the GPU image's triton first on ``PYTHONPATH`` (3.6).
On a GPU, ``gpu_check`` calls :func:`precompile` at the start of each step:
the step's launches, replayed on ``meta`` tensors, are specialised by each
kernel's own binder for the GPU's target and compiled with ``triton.compile``
(the cache key ``JITFunction.run`` computes; ``--check-warm`` proves it) by a
pool of worker processes into the process's Triton cache, so the step's own
launches are cache hits. Steps, each launch of its ops replayed in a dry run
(``kernel_profile``'s capture) at the step's shapes and dtypes:

- ``tests``: ``tests/ops/test_triton_kernels.py``, its launches as recorded
  from a run under the interpreter in :data:`TESTS_LAUNCHES` (a GPU cannot
  afford that run; ``tests/ops/test_triton_warm_cache.py`` fails when the
  recording is older than the test file or any source of ``mmspatial.ops``),
  plus its sm_90a compile test's specialisations and its CUDA section's shapes
  (not the inductor test's own generated kernels);
- ``check``: the fused op at detection stage 1 in float32, bfloat16 and float16,
  the unfused ops in bfloat16; ``time``: the fused op at the stage-1 regimes;
- ``backbone``: the layer's launches at every stage of Spatial-Mamba-T at
  224x224 batch 128 and 800x1344 batch 2; ``amp``: 224x224 batch 16, float16;
- ``sweep``: detection stage 1, one setting changed at a time;
- ``probe`` (not a step): the fused op at 2x16x12x14, every kernel, seconds.

In ``--measure`` a specialisation counts for the first step that launches it
(the steps share the cache). The Triton cache key (``triton.compiler.compile``)
is the triton build (``triton_key``), the kernel's source and specialisation,
the backend (ptxas version and arch) and options, and the cache-invalidating
environment: nothing of the device beyond the target ``cuda:90``.
"""
import argparse
import hashlib
import importlib
import json
import os
import sys
import time
from pathlib import Path

from kernel_profile import REPO_ROOT, cpu_seconds, gpu_target, specialise

# gpu_check's steps in order with their limits (tools/gpu_check.py STEPS)
STEP_ORDER = ('env', 'tests', 'check', 'traffic', 'time', 'backbone', 'amp', 'sweep')
TESTS_FILE = REPO_ROOT / 'tests' / 'ops' / 'test_triton_kernels.py'
# the launches of TESTS_FILE, one distinct launch description per line, and the
# sha256 of every source they were recorded from
TESTS_LAUNCHES = Path(__file__).resolve().with_name('tests_step_launches.json')


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


def kernel_name(kernel):
    """``module:name`` of a ``@triton.jit`` function (:func:`resolve_kernel`'s input)."""
    return f'{kernel.fn.__module__}:{kernel.fn.__name__}'


def resolve_kernel(name):
    module, _, attr = name.partition(':')
    return getattr(importlib.import_module(module), attr)


def launch_sources():
    """{repository path: sha256} of what decides the tests step's launches: the
    test file, its conftests and every Python file of ``mmspatial.ops``."""
    import mmspatial.ops
    ops_dir = Path(mmspatial.ops.__file__).resolve().parent
    files = [TESTS_FILE, TESTS_FILE.with_name('conftest.py'),
             REPO_ROOT / 'tests' / 'conftest.py', *sorted(ops_dir.rglob('*.py'))]
    return {str(f.resolve().relative_to(REPO_ROOT)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files}


def stale_sources(recorded):
    """Paths whose sources differ from ``recorded`` (added, removed or changed)."""
    current = launch_sources()
    return sorted(p for p in set(current) | set(recorded) if current.get(p) != recorded.get(p))


def record_tests(out_json):
    """Run TESTS_FILE under the interpreter, recording every distinct launch,
    and write them with the sources' hashes to ``out_json``."""
    import subprocess
    import tempfile

    from mmspatial.fileio.atomic import atomic_write_text
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / 'launches.jsonl'
        env = dict(os.environ, TRITON_INTERPRET='1', MMSPATIAL_RECORD_LAUNCHES=str(lines))
        env['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).resolve().parent),
                                             str(REPO_ROOT), env.get('PYTHONPATH', '')])
        code = subprocess.run([sys.executable, '-m', 'pytest', str(TESTS_FILE), '-q',
                               '-p', 'first_contact', '-p', 'no:cacheprovider'],
                              cwd=REPO_ROOT, env=env).returncode
        if code != 0:
            return code
        launches = list(dict.fromkeys(lines.read_text().splitlines()))
    atomic_write_text(out_json, '{"sources": ' + json.dumps(launch_sources(), indent=1)
                      + ',\n "launches": [\n' + ',\n'.join(launches) + '\n]}\n')
    print(f'[first_contact] {len(launches)} distinct launches recorded in {out_json}')
    return 0


def pytest_configure(config):
    """(pytest plugin, ``-p first_contact``) record launches to
    ``$MMSPATIAL_RECORD_LAUNCHES`` as JSON lines."""
    path = os.environ.get('MMSPATIAL_RECORD_LAUNCHES')
    if not path:
        return
    from mmspatial.ops import triton_launch
    sink = open(path, 'w')

    def record(kernel, grid, args, meta, reads, writes):
        sink.write(json.dumps(dict(kernel=kernel_name(kernel), args=describe(args),
                                   meta=meta), sort_keys=True) + '\n')
        sink.flush()
    triton_launch._launch_recorders.append(record)


def recorded_tests_launches(path=TESTS_LAUNCHES):
    """[(kernel, args, meta)] of TESTS_FILE as recorded in ``path``."""
    return [(resolve_kernel(r['kernel']), rebuild(r['args']), r['meta'])
            for r in json.loads(Path(path).read_text())['launches']]


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
    """[(kernel, args, meta)] of one gpu_check step at full size (``tests_json``:
    the tests step's recording, TESTS_LAUNCHES by default)."""
    import torch

    from mmspatial.kernel_traffic import REGIMES, STAGE_ONE, Regime
    from mmspatial.ops.triton_launch import override_config
    stage1 = STAGE_ONE[0]
    if step == 'tests':
        launches = recorded_tests_launches(tests_json or TESTS_LAUNCHES)
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


# ------------------------------------------------------------------- compiling

def available_cpus():
    """CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _ready(modules):
    """Pool initializer: import the kernels' modules; the time they were ready."""
    global _READY_AT
    for module in modules:
        importlib.import_module(module)
    _READY_AT = time.time()


_READY_AT = None


def _compile_job(job):
    """Compile one described launch for ``target``: (key, CPU seconds, error or
    None, pid, the time this worker was ready)."""
    import triton
    from triton.backends.compiler import GPUTarget
    name, described, meta, target = job
    target = GPUTarget(*target)
    start = cpu_seconds()
    try:
        key, source, options, _ = specialise(resolve_kernel(name), rebuild(described), meta,
                                             target)
        triton.compile(source, target=target, options=options.__dict__)
        error = None
    except Exception as exc:           # reported by the caller, one line per launch
        key, error = None, f'{type(exc).__name__}: {exc}'
    return key, cpu_seconds() - start, error, os.getpid(), _READY_AT


def compile_launches(launches, target, workers=None, skip=()):
    """Compile every distinct specialisation of ``launches`` [(kernel, args,
    meta)] for ``target`` (a ``GPUTarget``) into ``$TRITON_CACHE_DIR``, each
    once, a cache hit costing only its lookup; ``skip``: keys not to compile.

    ``workers`` processes (spawned; default: the CPUs available, at most one
    per specialisation), or this process alone for 1. Returns dict(new, cpu_s
    (compiling, summed over workers), longest_s (the longest compile), wall_s,
    capture_s (specialising here), start_s (pool start until the last worker
    imported the kernels), workers, keys, errors).
    """
    start = time.time()
    jobs, keys = [], []
    for kernel, args, meta in launches:
        key = specialise(kernel, args, meta, target)[0]
        if key in skip or key in keys:
            continue
        keys.append(key)
        jobs.append((kernel_name(kernel), describe(args), dict(meta),
                     (target.backend, target.arch, target.warp_size)))
    workers = max(1, min(workers or available_cpus(), len(jobs)))
    modules = sorted({name.partition(':')[0] for name, *_ in jobs})
    pool_start = time.time()
    if workers == 1:
        _ready(modules)
        results = [_compile_job(job) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                                 initializer=_ready, initargs=(modules,)) as pool:
            results = list(pool.map(_compile_job, jobs))
    errors = [f'{job[0]}: {error}' for job, (_, _, error, _, _) in zip(jobs, results) if error]
    errors += [f'{job[0]}: rebuilt arguments specialise differently'
               for job, want, (got, _, error, _, _) in zip(jobs, keys, results)
               if not error and got != want]
    return dict(new=len(jobs), cpu_s=sum(r[1] for r in results),
                longest_s=max((r[1] for r in results), default=0.0),
                wall_s=time.time() - start, capture_s=pool_start - start,
                start_s=max((r[4] for r in results), default=pool_start) - pool_start,
                workers=workers, keys=set(keys), errors=errors)


def active_target():
    """The target of this process's GPU (``cuda:90`` on an H200)."""
    from triton.runtime import driver
    return driver.active.get_current_target()


def precompile(step, workers=None, log=print):
    """Compile every kernel specialisation gpu_check's ``step`` launches for this
    process's GPU into its Triton cache, in parallel (``gpu_check`` calls this
    first in each step's process); one log line. Returns compile_launches'
    dict."""
    start = time.time()
    launches = step_launches(step)
    done = compile_launches(launches, active_target(), workers)
    log(f'[precompile] {step}: {len(launches)} launches, {done["new"]} specialisations, '
        f'{done["cpu_s"]:.0f} CPU s on {done["workers"]} workers, '
        f'{time.time() - start:.0f} s wall')
    for error in done['errors']:
        log(f'[precompile] {step}: not precompiled: {error}')
    return done


# ------------------------------------------------------------------- measuring

def measure(steps, tests_json, log, workers=1):
    """{step: dict(launches, new, cpu_s, longest_s, wall_s, capture_s, start_s,
    workers, limit_s)}: each step's new sm_90a specialisations, compiled cold
    (into $TRITON_CACHE_DIR) by ``workers`` processes, and the time that took
    (capture_s: replaying and specialising its launches in this process)."""
    STEPS = _gpu_check().STEPS
    target = gpu_target('sm_90a')
    seen, out = set(), {}
    for step in steps:
        start = time.time()
        launches = step_launches(step, tests_json)
        done = compile_launches(launches, target, workers, skip=seen)
        if done['errors']:
            raise RuntimeError('\n'.join(done['errors']))
        seen |= done['keys']
        out[step] = dict(launches=len(launches), new=done['new'],
                         cpu_s=round(done['cpu_s'], 1), longest_s=round(done['longest_s'], 1),
                         wall_s=round(time.time() - start, 1),
                         capture_s=round(time.time() - start - done['wall_s']
                                         + done['capture_s'], 1),
                         start_s=round(done['start_s'], 1), workers=done['workers'],
                         limit_s=STEPS.get(step))
        log(f'[first_contact] {step}: {len(launches)} launches, {done["new"]} new '
            f'specialisations, {done["cpu_s"]:.0f} CPU s, {out[step]["wall_s"]:.0f} s wall '
            f'on {done["workers"]} workers (limit {STEPS.get(step)} s)')
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


def check_warm(steps, tests_json, control_dir=None):
    """[(kernel, step)] of launches that the cache in $TRITON_CACHE_DIR misses on
    the JIT path a GPU takes (``JITFunction.run`` with ``warmup=True``), and,
    checked first in this process, those that ``control_dir`` misses (an empty
    cache: all of them, or the check could not tell a miss). Returns (misses,
    control misses)."""
    from triton.compiler import compiler
    from triton.runtime.driver import driver
    driver.set_active(H200Driver())

    def no_compile(*args, **kwargs):
        raise LookupError('cache miss')
    compiler.ASTSource.make_ir = no_compile          # a miss would have to build IR
    launches = [(step, launch) for step in steps for launch in step_launches(step, tests_json)]

    def misses_in(cache_dir):
        """Misses of the cache in ``cache_dir``; a hit stays in the kernel's memory, so a
        miss is only seen before the first hit of its specialisation."""
        saved = os.environ.get('TRITON_CACHE_DIR')
        os.environ['TRITON_CACHE_DIR'] = str(cache_dir)
        found = []
        for step, (kernel, args, meta) in launches:
            try:
                kernel.run(*args, grid=(1,), warmup=True, **meta)
            except LookupError:
                found.append((kernel.fn.__name__, step))
        if saved is not None:
            os.environ['TRITON_CACHE_DIR'] = saved
        return found
    control = misses_in(control_dir) if control_dir else []
    return misses_in(os.environ.get('TRITON_CACHE_DIR', '')), control


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument('--measure', action='store_true')
    mode.add_argument('--check-warm', action='store_true')
    mode.add_argument('--record-tests', type=Path, metavar='JSON', nargs='?',
                      const=TESTS_LAUNCHES, help=f'default: {TESTS_LAUNCHES.name}')
    parser.add_argument('--steps', nargs='+', default=[s for s in STEP_ORDER if s not in
                                                       ('env', 'traffic')])
    parser.add_argument('--tests-json', type=Path,
                        help=f"the tests step's launches (default: {TESTS_LAUNCHES.name})")
    parser.add_argument('--workers', type=int, default=1,
                        help='compiling processes (--measure)')
    parser.add_argument('--cache-dir', type=Path)
    parser.add_argument('--control-cache-dir', type=Path,
                        help='--check-warm: an empty cache, checked first, that must miss')
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    if args.record_tests:
        sys.exit(record_tests(args.record_tests.resolve()))
    if args.cache_dir:
        os.environ['TRITON_CACHE_DIR'] = str(args.cache_dir)
    os.environ.pop('TRITON_INTERPRET', None)
    if args.measure:
        result = measure(args.steps, args.tests_json,
                         lambda line: print(line, file=sys.stderr, flush=True), args.workers)
        text = json.dumps(result, indent=1)
        if args.json:
            from mmspatial.fileio.atomic import atomic_write_text
            atomic_write_text(args.json, text)
        print(text)
    else:
        misses, control = check_warm(args.steps, args.tests_json, args.control_cache_dir)
        print(json.dumps(dict(misses=misses, **(dict(control_misses=control)
                                                if args.control_cache_dir else {}))))
        sys.exit(1 if misses else 0)


if __name__ == '__main__':
    main()
