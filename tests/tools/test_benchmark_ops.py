"""tools/benchmark_ops.py runs, every table and check of it, at --smoke shapes.

The CUDA tables and ``--check`` have to work the first time a GPU is lent (its
minutes are few), so they run here too: on CPU tensors under the Triton
interpreter. Timings are not asserted, only that each table is complete and
that ``--check`` finds the kernels agreeing with the references.
"""
import os
import subprocess
import sys

from .helpers import REPO_ROOT, TOOLS

SCRIPT = os.path.join(TOOLS, 'benchmark_ops.py')


def run_benchmark(*args, interpret):
    """The script in a fresh process: ``TRITON_INTERPRET`` as given, not inherited
    (the Triton tests set it in this process), and no GPU visible, so that
    these checks of the CPU and interpreter paths hold on a GPU machine too."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['CUDA_VISIBLE_DEVICES'] = ''
    if interpret:
        env['TRITON_INTERPRET'] = '1'
    return subprocess.run([sys.executable, SCRIPT, '--smoke', *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def table_rows(stdout, first_cell):
    return [line for line in stdout.splitlines() if line.startswith(f'| {first_cell}')]


def test_cpu_tables():
    result = run_benchmark('--device', 'cpu', interpret=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert 'Selective scan, batch 2, D = 8, L = 30, N = 1' in out
    assert len(table_rows(out, '`selective_scan_chunked`')) == 2
    assert len(table_rows(out, '1 | 8 | 6x5')) == 1
    assert len(table_rows(out, 'all 3 blocks')) == 1
    shares = table_rows(out, 'fused op, PyTorch backend') + table_rows(
        out, '`structure_aware_ssm_ref`')
    assert len(shares) == 2 and all(row.rstrip().endswith('% |') for row in shares)


def test_cuda_tables_under_the_interpreter():
    result = run_benchmark('--device', 'cuda', interpret=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'CPU under the Triton interpreter' in result.stdout
    rows = table_rows(result.stdout, 'smoke 6x5, batch 2')
    # four implementations, float32 and bfloat16
    assert len(rows) == 8, result.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip('|').split('|')]
        assert float(cells[3]) > 0 and float(cells[4]) > 0, row      # fwd, fwd+bwd ms


def test_check_under_the_interpreter():
    result = run_benchmark('--device', 'cuda', '--check', interpret=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == '0 failure(s)'
    # 3 dtypes x 2 shapes x 2 state sizes x (fused: value + 9 grads,
    # scan: value + 5 grads, fusion: value + 3 grads)
    assert sum(line.startswith('ok ') for line in lines) == 3 * 2 * 2 * (10 + 6 + 4)


def test_cuda_tables_without_a_gpu_say_what_they_need():
    result = run_benchmark('--device', 'cuda', interpret=False)
    assert result.returncode != 0
    assert 'need a CUDA device (or, to check the script only, --smoke with ' \
           'TRITON_INTERPRET=1)' in result.stderr
