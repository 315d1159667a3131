"""A Triton cache built on a CPU is hit on a GPU's code path, in another process.

``tools/analysis/first_contact.py --measure`` compiles the launches of a
``gpu_check`` step ahead of time for sm_90a (``triton.compile`` with the
launchers' own specialisations) into ``TRITON_CACHE_DIR``, here on two worker
processes, the pool ``gpu_check`` runs at the start of each step on a GPU;
``--check-warm`` then replays them in a fresh process through
``JITFunction.run(warmup=True)``, the path a GPU takes, with a driver that
reports an H200's target and IR building disabled: any miss fails. The same
process first checks an empty cache, which misses every launch.

Triton 3.6 (the GPU image's) from ``MMSPATIAL_TRITON36_PATH``; what this does
not prove: that the GPU image's triton 3.6 wheel, ptxas and cache-invalidating
environment are the ones here (they enter the key), and that a real driver
reports ``cuda:90`` (an H200 does).

The tests step's launches come from a recording (``first_contact.TESTS_LAUNCHES``)
that a GPU replays without running the test file; it must be as new as its
sources.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from .test_triton_kernel_report import triton36_path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'analysis' / 'first_contact.py'


def run_tool(triton_path, *args):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = os.pathsep.join([str(triton_path), str(REPO_ROOT)])
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def first_contact():
    sys.path.insert(0, str(TOOL.parent))
    try:
        spec = importlib.util.spec_from_file_location('first_contact', TOOL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOL.parent))
    return module


def test_cache_built_by_worker_processes_is_hit_by_the_jit_path_of_another(tmp_path):
    triton36 = triton36_path()
    cache = tmp_path / 'cache'
    built = run_tool(triton36, '--measure', '--steps', 'probe', '--workers', '2',
                     '--cache-dir', str(cache))
    assert built.returncode == 0, built.stderr[-3000:]
    probe = json.loads(built.stdout)['probe']
    assert probe['workers'] == 2 and probe['new'] >= 6            # every kernel compiled
    warm = run_tool(triton36, '--check-warm', '--steps', 'probe', '--cache-dir', str(cache),
                    '--control-cache-dir', str(tmp_path / 'empty'))
    assert warm.returncode == 0, warm.stdout[-3000:] + warm.stderr[-3000:]
    checked = json.loads(warm.stdout)
    assert checked['misses'] == []
    assert len(checked['control_misses']) == probe['launches']   # an empty cache misses


def test_recorded_tests_step_launches_are_as_new_as_their_sources():
    fc = first_contact()
    recorded = json.loads(fc.TESTS_LAUNCHES.read_text())
    stale = fc.stale_sources(recorded['sources'])
    assert not stale, (f'{fc.TESTS_LAUNCHES.name} is older than {stale}: re-record it with '
                       '`python tools/analysis/first_contact.py --record-tests`')
    changed = dict(recorded['sources'], **{'tests/ops/test_triton_kernels.py': '0' * 64})
    del changed[sorted(changed)[0]]
    assert fc.stale_sources(changed) == sorted(['tests/ops/test_triton_kernels.py',
                                                sorted(recorded['sources'])[0]])
    names = {r['kernel'] for r in recorded['launches']}
    assert all(fc.resolve_kernel(name) for name in names)         # each kernel still there
    # the tests launch every Triton kernel of the operators
    import importlib
    defined = {f'{module.__name__}:{name}' for module in (
        importlib.import_module(f'mmspatial.ops.{op}.triton_backend')
        for op in ('selective_scan', 'state_fusion')) for name in dir(module)
        if name.endswith('_kernel')}
    assert names == defined
    assert len(recorded['launches']) > len(names)
