"""tools/analysis/benchmark_ops.py runs, every table of it, at --smoke shapes
(timings are not asserted, only that each table is complete and that progress
goes to stderr, free of colour codes)."""
import os
import subprocess
import sys

from .helpers import REPO_ROOT, TOOLS

SCRIPT = os.path.join(TOOLS, 'analysis', 'benchmark_ops.py')


def run_benchmark(*args):
    """The script in a fresh process; the CPU tables hold on a GPU machine too."""
    return subprocess.run([sys.executable, SCRIPT, '--smoke', *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def table_rows(stdout, first_cell):
    return [line for line in stdout.splitlines() if line.startswith(f'| {first_cell}')]


def test_cpu_tables():
    result = run_benchmark()
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert 'Selective scan, batch 2, D = 8, L = 30, N = 1' in out
    assert len(table_rows(out, '`selective_scan_torch`')) == 2
    assert len(table_rows(out, '1 | 8 | 6x5')) == 1
    assert len(table_rows(out, 'all 3 blocks')) == 1
    shares = table_rows(out, 'fused op, PyTorch backend') + table_rows(
        out, '`structure_aware_ssm_ref`')
    assert len(shares) == 2 and all(row.rstrip().endswith('% |') for row in shares)
    assert 'rounds' not in out and '\033' not in result.stderr
    labels = ['selective scan, rounds:', 'stage shapes, stages:',
              'SSM share in a T forward, rounds (2 warm-up):']
    assert [line for line in result.stderr.splitlines() if line in labels] == labels
    assert '2/2' in result.stderr and '7/7' in result.stderr  # rounds, stages; share
