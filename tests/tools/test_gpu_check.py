"""tools/gpu_check.py runs end to end at --smoke shapes, every step of it.

The GPU command has to work the first time it meets a GPU,
so CI runs it on CPU tensors under the Triton interpreter: the kernels'
values and gradients are checked as on a GPU, the timings are meaningless and
not asserted. About a minute and a half on two cores.
"""
import os
import subprocess
import sys

import pytest
import torch

from .helpers import REPO_ROOT, TOOLS

SCRIPT = os.path.join(TOOLS, 'gpu_check.py')


def run_gpu_check(out, *args, interpret=True):
    """The script in a fresh process, ``TRITON_INTERPRET`` as given, not inherited."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    if interpret:
        env['TRITON_INTERPRET'] = '1'
    return subprocess.run([sys.executable, SCRIPT, '--out', str(out), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.skipif(torch.cuda.is_available(), reason='on a GPU the command runs for '
                    'real, at full size (minutes): run it by hand')
def test_smoke_run_under_the_interpreter(tmp_path):
    result = run_gpu_check(tmp_path, '--smoke', '--sweep')
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = (tmp_path / 'summary.md').read_text()
    for step in ('env', 'tests', 'check', 'traffic', 'time', 'backbone', 'amp', 'sweep'):
        assert f'| {step} | ok |' in summary, summary
        assert (tmp_path / f'{step}.md').exists()
    assert 'CPU under the Triton interpreter: timings meaningless' in summary
    check_rows = [line for line in summary.splitlines() if line.startswith('| fused, ')]
    assert len(check_rows) == 3 and all(row.rstrip().endswith('| ok |')
                                        for row in check_rows), check_rows
    assert summary.count('**total**') == 2
    assert '| Spatial-Mamba-T | 1x3x64x64 |' in summary
    # the amp step runs the float16 + GradScaler path on the CPU as on a GPU
    assert 'float16 autocast with GradScaler' in (tmp_path / 'amp.md').read_text()
    # under the interpreter no step compiles its kernels ahead
    assert '[precompile] check: skipped (the interpreter runs the kernels)' in \
        (tmp_path / 'check.log').read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path):
    result = run_gpu_check(tmp_path / 'out', interpret=False)
    assert result.returncode != 0
    assert result.stdout == ''
    assert result.stderr.strip().splitlines() == [
        'gpu_check: no CUDA device here; on a CPU only the script can be checked: '
        'TRITON_INTERPRET=1 python tools/gpu_check.py --smoke --out DIR']
    assert not (tmp_path / 'out').exists()          # no step ran
