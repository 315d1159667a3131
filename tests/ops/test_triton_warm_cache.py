"""A Triton cache built on a CPU is hit on a GPU's code path, in another process.

``tools/analysis/first_contact.py --measure`` compiles the launches of a
``gpu_check`` step ahead of time for sm_90a (``triton.compile`` with the
launchers' own specialisations) into ``TRITON_CACHE_DIR``; ``--check-warm``
then replays them in a fresh process through ``JITFunction.run(warmup=True)``,
the path a GPU takes, with a driver that reports an H200's target and IR
building disabled: any miss fails. A control run on an empty cache misses.

Triton 3.6 (the GPU image's) from ``MMSPATIAL_TRITON36_PATH``; what this does
not prove: that the GPU image's triton 3.6 wheel, ptxas and cache-invalidating
environment are the ones here (they enter the key), and that a real driver
reports ``cuda:90`` (an H200 does).
"""
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


def test_cache_built_here_is_hit_by_the_jit_path_of_another_process(tmp_path):
    triton36 = triton36_path()
    cache = tmp_path / 'cache'
    built = run_tool(triton36, '--measure', '--steps', 'probe', '--cache-dir', str(cache))
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout)['probe']['new'] >= 6          # every kernel compiled
    warm = run_tool(triton36, '--check-warm', '--steps', 'probe', '--cache-dir', str(cache))
    assert warm.returncode == 0, warm.stdout[-3000:] + warm.stderr[-3000:]
    assert json.loads(warm.stdout) == {'misses': []}
    cold = run_tool(triton36, '--check-warm', '--steps', 'probe', '--cache-dir',
                    str(tmp_path / 'empty'))
    assert cold.returncode == 1 and len(json.loads(cold.stdout)['misses']) >= 6
