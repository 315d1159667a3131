"""tools/analysis/kernel_report.py: the static GPU profile and the kernels' budgets.

The report runs once per session on its reduced set (detection stage 1, the
pinned triton and triton 3.6, sm_90a and gfx942; about a minute and a half on
two cores with a cold Triton cache, seconds with a warm one), or on every
regime with ``MMSPATIAL_KERNEL_REPORT_FULL=1``. Triton 3.6 (the GPU image's)
is the side install of ``tools/setup_env.sh`` (``MMSPATIAL_TRITON36_PATH``);
under ``MMSPATIAL_REQUIRE_TRITON_TESTS=1`` (``make test``) its absence fails.

Budgets: no spills, at least 2 resident blocks per SM (CU) for launches of at
least 264 programs, for every kernel on either triton and target. The cases
today's kernels break are ``KNOWN_BROKEN``, strict xfails: a fix turns one into
an XPASS, which fails until its entry is removed; any other break fails.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip('triton.backends.nvidia')

SCRIPT = Path(REPO_ROOT) / 'tools' / 'analysis' / 'kernel_report.py'
FULL = os.environ.get('MMSPATIAL_KERNEL_REPORT_FULL') == '1'
REQUIRED = os.environ.get('MMSPATIAL_REQUIRE_TRITON_TESTS') == '1'
KERNELS = ('_scan_chunk_kernel', '_scan_carry_kernel', '_fusion_fwd_kernel',
           '_fusion_bwd_border_kernel', '_fusion_bwd_input_kernel',
           '_fusion_bwd_weights_kernel', '_scan_bwd_chunk_kernel')
TRITONS = ('pinned', '3.6')
TARGETS = ('sm_90a', 'gfx942')
BUDGETS = ('spills', 'occupancy')
# (kernel, triton, target, budget) that the kernels break, and how: none, on the
# reduced set and in the full set
KNOWN_BROKEN = {}
RECORD_KEYS = {'kernel', 'pass', 'regime', 'triton', 'target', 'regs', 'spill_bytes',
               'smem_bytes', 'blocks_per_sm', 'instr_per_elem', 'bytes_per_elem', 'est_us'}


def triton36_path():
    """The folder holding triton 3.6 (``tools/setup_env.sh`` installs it there)."""
    cache = os.environ.get('MMSPATIAL_CACHE', os.path.expanduser('~/.cache/mmspatial'))
    path = Path(os.environ.get('MMSPATIAL_TRITON36_PATH',
                               os.path.join(cache, 'triton-3.6.0')))
    if (path / 'triton' / '__init__.py').exists():
        return path
    message = (f'no triton 3.6 in {path}: run tools/setup_env.sh or set '
               'MMSPATIAL_TRITON36_PATH')
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp('kernel_report')
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    cmd = [sys.executable, str(SCRIPT), '--out', str(out),
           '--triton-path', str(triton36_path())] + ([] if FULL else ['--reduced'])
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=3600 if FULL else 900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'report.json').read_text())
    report['markdown'] = (out / 'report.md').read_text()
    return report


def triton_label(version):
    return '3.6' if version.startswith('3.6.') else 'pinned'


def test_report_schema_and_model(report):
    records = report['records']
    assert {triton_label(r['triton']) for r in records} == set(TRITONS)
    assert {r['target'] for r in records} == set(TARGETS)
    for r in records:
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r['regs' if r['target'] == 'sm_90a' else 'vgprs'] > 0
        assert r['blocks_per_sm'] >= 1
        if r['target'] == 'sm_90a':
            assert r['est_us'] >= max(r['instr_us'], r['bytes_us']) > 0
    stage1 = [r for r in records if r['regime'] == 'detection 800x1344 b2 T s1']
    # every kernel, both passes, both tritons and targets
    assert {r['kernel'] for r in stage1} == set(KERNELS)
    totals = {(t['regime'], t['pass'], triton_label(t['triton']), t['target']): t
              for t in report['totals']}
    for triton in TRITONS:
        fwd = totals[('detection 800x1344 b2 T s1', 'fwd', triton, 'sm_90a')]
        bwd = totals[('detection 800x1344 b2 T s1', 'bwd', triton, 'sm_90a')]
        # bf16 u, delta, B, C in, float32 y out: 8 B per element and a little
        assert 8 < fwd['floor_bytes_per_elem'] < 8.1
        assert 12 < bwd['floor_bytes_per_elem'] < 12.1
        assert fwd['est_us'] > fwd['floor_us'] > 0 and bwd['est_us'] > bwd['floor_us']
    assert 'max(instructions /' in report['markdown']
    assert '## Budgets' in report['markdown']


def _budget_cases():
    for kernel in KERNELS:
        for triton in TRITONS:
            for target in TARGETS:
                for budget in BUDGETS:
                    key = (kernel, triton, target, budget)
                    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[key])] \
                        if key in KNOWN_BROKEN else []
                    yield pytest.param(*key, marks=marks, id='-'.join(key))


@pytest.mark.parametrize('kernel,triton,target,budget', list(_budget_cases()))
def test_budget(report, kernel, triton, target, budget):
    broken = [v for v in report['violations'] if v['kernel'] == kernel
              and triton_label(v['triton']) == triton and v['target'] == target
              and v['budget'] == budget]
    assert not broken, broken[0]['detail']


def test_a_folder_without_triton_is_one_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    result = subprocess.run([sys.executable, str(SCRIPT), '--out', str(tmp_path),
                             '--triton-path', str(tmp_path / 'none')], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f'kernel_report.py: error: --triton-path {tmp_path / "none"}: no triton package '
        'in that folder']


def test_missing_triton36_fails_where_the_triton_tests_are_required(tmp_path):
    """Under ``make test`` (MMSPATIAL_REQUIRE_TRITON_TESTS=1) the 3.6 budgets cannot
    skip: without the side install they fail, naming the fix."""
    env = dict(os.environ, MMSPATIAL_REQUIRE_TRITON_TESTS='1',
               MMSPATIAL_TRITON36_PATH=str(tmp_path / 'none'))
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', __file__, '-q', '-k', 'schema_and_model',
         '-p', 'no:cacheprovider'], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:]
    assert 'run tools/setup_env.sh or set MMSPATIAL_TRITON36_PATH' in result.stdout


def test_border_share_is_reported(report):
    """The backward's border work is priced against its main stencil: the border
    launch, and the input gradient's border loop (at detection's 200 rows its
    walk takes the first and last rows' terms), by what it adds to its
    launch's estimate."""
    for triton in TRITONS:
        shares = [v for (task, t), v in _border(report).items() if triton_label(t) == triton]
        assert shares and all(0 < v['border_us'] < v['rest_us'] for v in shares)
    inputs = [r for r in report['records'] if r['kernel'] == '_fusion_bwd_input_kernel'
              and r['target'] == 'sm_90a' and r['regime'] == 'detection 800x1344 b2 T s1']
    # one loop nest: the walk's steps, and in it the border loop (the steps on
    # the outer rows and columns enter it)
    assert inputs and all(r['loops_matched'] and len(r['nest_instr']) == 1
                          and len(r['depth_instr'][0]) == 2 for r in inputs)
    for r in inputs:
        assert 0 < r['border_dynamic_instr'] < 0.05 * r['dynamic_instr']
        assert 0 <= r['border_us'] <= r['est_us'] - 4.0


def test_weight_sums_in_the_adjoint_scan_are_priced_as_stencil(report):
    """The fused op's adjoint scan forms the fusion's weight sums: the profile
    also compiles it without them, and what they add to its estimate counts
    with the main stencil; the launch before the input gradient writes only g_h."""
    adjoint = [r for r in report['records'] if r['kernel'] == '_scan_bwd_chunk_kernel'
               and r['target'] == 'sm_90a' and r['regime'] == 'detection 800x1344 b2 T s1'
               and r['constexprs']['FINAL']]
    assert {triton_label(r['triton']) for r in adjoint} == set(TRITONS)
    for r in adjoint:
        assert r['constexprs']['FUSION']
        # the sums' 25 gathers and multiply-adds a step: more instructions
        assert 0 < r['stencil_free_dynamic_instr'] < 0.75 * r['dynamic_instr']
        # C read, the partials of the sums and g_C written
        assert 1.5 < r['stencil_bytes'] / r['elements'] < 2.0
        assert 0 < r['stencil_us'] < r['est_us'] - 4.0
    g_h = [r for r in report['records'] if r['kernel'] == '_fusion_bwd_weights_kernel'
           and r['target'] == 'sm_90a' and r['regime'] == 'detection 800x1344 b2 T s1']
    assert g_h and all(not r['constexprs']['SUMS'] and r['bytes_per_elem'] < 9 for r in g_h)


@pytest.mark.skipif(not FULL, reason='needs the classification regimes of the full set')
def test_border_budget_at_classification(report):
    """At classification 224x224 batch 128, over the four stages, the border launches
    cost at most 10 % of the main backward stencil, on both tritons."""
    shares = [v for (task, _), v in _border(report).items() if task.startswith('classif')]
    assert len(shares) == len(TRITONS)
    assert all(v['border_us'] <= 0.10 * v['rest_us'] for v in shares), shares


def _border(report):
    return {(b['task'], b['triton']): b for b in report['border']}
