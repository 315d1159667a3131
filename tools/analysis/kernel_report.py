"""Static GPU profile of the Triton kernels, without a GPU: registers, spills,
occupancy, instructions and bytes per element, and an estimated time per launch.

    python tools/analysis/kernel_report.py --out DIR [--triton-path PATH ...]
        [--regimes NAME ...] [--targets sm_90a gfx942] [--skip-pinned]

Every launch the fused op makes at each regime (``mmspatial.kernel_traffic.REGIMES``)
is compiled for an H200 (``sm_90a``) and an MI300 (``gfx942``) with the triton
this interpreter imports (the pinned one) and with each ``--triton-path`` (a
folder with another ``triton`` package, first on ``sys.path``), in a
subprocess per triton (``kernel_profile.py``). ``DIR/report.json`` holds one
record per launch and target and a ``totals`` entry per regime, pass, triton
and target; ``DIR/report.md`` the same as tables, with the model stated.

The model (:data:`MODEL`, fixed, not tuned) and the budgets (:func:`violations`)
are stated in the report; ``tests/ops/test_triton_kernel_report.py`` runs the
reduced set (detection stage 1, both tritons, both targets) and holds the
budgets.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILER = Path(__file__).resolve().parent / 'kernel_profile.py'
REDUCED_REGIMES = ('detection 800x1344 b2 T s1',)

# H200 (sm_90a): the estimate's constants and the occupancy limits per SM
MODEL = dict(sms=132, clock_ghz=1.98, issue_per_sm_cycle=4, hbm_tb_s=4.0, launch_us=4.0,
             regs_per_sm=65536, reg_alloc_unit=256, smem_per_sm=228 * 1024,
             smem_reserved_per_block=1024, warps_per_sm=64, blocks_per_sm=32)
# MI300X (gfx942): 304 CUs of 4 SIMDs, up to 8 waves per SIMD, 64 KB LDS per CU
MI300 = dict(cus=304, simds_per_cu=4, waves_per_simd=8, lds_per_cu=64 * 1024)
# budgets: no spills; at least MIN_BLOCKS resident per SM (CU) when a launch has
# at least BUSY_PROGRAMS programs (2 per SM of an H200)
MIN_BLOCKS, BUSY_PROGRAMS = 2, 2 * MODEL['sms']

MODEL_TEXT = f"""\
Estimate per launch (fixed model, not tuned, H200): time = max(instructions /
issue rate, bytes / bandwidth) + {MODEL['launch_us']:.0f} µs launch overhead, where

- instructions = warp-instructions of one program x programs; one program's
  are its SASS instructions, each counted once per iteration of every loop that
  holds it (loops: backward branches; trip counts from the launch's arguments;
  loops that only some programs enter, such as the border kernel's corners
  or the input gradient's first and last rows, at their mean over the
  programs, each loop nest with its own), branches not taken and
  predicated-off lanes counted as executed;
- issue rate = {MODEL['issue_per_sm_cycle']} warp-instructions per cycle per SM on \
min({MODEL['sms']}, programs) SMs at {MODEL['clock_ghz']} GHz;
- bytes = the traffic account of the launch (each tensor it reads or writes
  once), bandwidth {MODEL['hbm_tb_s']} TB/s.

Occupancy on sm_90a: blocks per SM = min({MODEL['blocks_per_sm']}, \
{MODEL['warps_per_sm']} warps / warps per block, {MODEL['regs_per_sm']} registers / \
(warps x 32 x registers, rounded up to {MODEL['reg_alloc_unit']} per warp), \
{MODEL['smem_per_sm'] // 1024} KB / (shared memory + 1 KB)); on gfx942: blocks per CU =
min(waves per SIMD x 4 / waves per block, 64 KB LDS / LDS per block).
Floor of a pass: the op's own inputs read once and outputs written once in
their dtypes, no intermediate state (`mmspatial.kernel_traffic.floor_bytes`),
at {MODEL['hbm_tb_s']} TB/s.
Instructions per element are thread-instructions (warp-instructions x 32) per
element of (batch, D, L).
Border share: the border launch's estimate, plus what the stencil launches'
border loops add to theirs (their estimate less the one without those loops'
instructions), against the rest of the stencil launches' estimates (the
input gradient's with the adjoint scan's chunk summaries it forms in the
fused op), plus what the stencil work inside other launches adds to theirs
(the fused op's adjoint scan, which forms the weight sums and g_C: its
estimate less the one of the same launch compiled without them, less their
bytes)."""


def blocks_per_sm(record):
    """Resident blocks per SM (sm_90a) or per CU (gfx942) for this launch."""
    warps = record['num_warps']
    if record['target'] == 'gfx942':
        by_waves = record['waves_per_simd'] * MI300['simds_per_cu'] // warps
        lds = record['smem_bytes']
        by_lds = MI300['lds_per_cu'] // lds if lds else by_waves
        return min(by_waves, by_lds)
    unit = MODEL['reg_alloc_unit']
    per_warp = -(-max(record['regs'], 1) * 32 // unit) * unit
    by_regs = (MODEL['regs_per_sm'] // per_warp) // warps
    by_smem = MODEL['smem_per_sm'] // (record['smem_bytes'] + MODEL['smem_reserved_per_block'])
    return min(MODEL['blocks_per_sm'], MODEL['warps_per_sm'] // warps, by_regs, by_smem)


def model(record):
    """Add the occupancy and, on sm_90a, the instruction and time estimate."""
    record['blocks_per_sm'] = blocks_per_sm(record)
    record['warps_per_sm'] = record['blocks_per_sm'] * record['num_warps']
    record['bytes_per_elem'] = record['bytes'] / record['elements']
    bytes_us = record['bytes'] / (MODEL['hbm_tb_s'] * 1e6)
    if record['target'] != 'sm_90a':
        record.update(instr_per_elem=None, est_us=None)
        return record
    warp_instr = record['dynamic_instr'] * record['num_warps'] * record['programs']
    rate = MODEL['issue_per_sm_cycle'] * min(MODEL['sms'], record['programs']) * \
        MODEL['clock_ghz'] * 1e3                                  # per us
    record['instr_per_elem'] = warp_instr * 32 / record['elements']
    record['instr_us'] = warp_instr / rate
    record['bytes_us'] = bytes_us
    record['est_us'] = max(record['instr_us'], bytes_us) + MODEL['launch_us']
    # what the loops that add replicate padding's border terms inside this
    # launch cost it: its estimate less the estimate without them
    without = warp_instr * (1 - record.get('border_dynamic_instr', 0)
                            / max(record['dynamic_instr'], 1)) / rate
    record['border_us'] = record['est_us'] - max(without, bytes_us) - MODEL['launch_us']
    # the backward stencil's work inside this launch (kernel_profile.STENCIL_WORK):
    # its estimate less the one of the launch without that work
    if record.get('stencil_free_dynamic_instr') is not None:
        free_instr = record['stencil_free_dynamic_instr'] * record['num_warps'] * \
            record['programs'] / rate
        free_bytes = (record['bytes'] - record['stencil_bytes']) / (MODEL['hbm_tb_s'] * 1e6)
        record['stencil_us'] = record['est_us'] - max(free_instr, free_bytes) - \
            MODEL['launch_us']
    return record


# the fusion backward's launches: what replicate padding adds at the border,
# and the two stencil launches (input gradient; weights' sums and g_h, in the
# fused op g_h only: its adjoint scan forms the sums, priced as ``stencil_us``)
BORDER_KERNEL = '_fusion_bwd_border_kernel'
STENCIL_KERNELS = ('_fusion_bwd_input_kernel', '_fusion_bwd_weights_kernel')


def task_of(regime_name):
    """'classification 224x224 b128 T s2' -> 'classification 224x224 b128 T'."""
    return regime_name.rsplit(' s', 1)[0]


def border_shares(records):
    """[{task, triton, border_us, rest_us, stages}]: the backward's border work
    (the border launches, and the border loops of the stencil launches:
    ``border_us`` of :func:`model`) and the rest of its stencil launches, with
    the stencil work other launches do (``stencil_us`` of :func:`model`: the
    fused op's weight sums in its adjoint scan), ``est_us`` summed over the
    stages of each task profiled, on sm_90a."""
    shares = {}
    for r in records:
        stencil_us = r.get('stencil_us')
        if r['target'] != 'sm_90a' or (stencil_us is None and r['kernel'] not in
                                       (BORDER_KERNEL, *STENCIL_KERNELS)):
            continue
        entry = shares.setdefault((task_of(r['regime']), r['triton']),
                                  dict(task=task_of(r['regime']), triton=r['triton'],
                                       border_us=0.0, rest_us=0.0, stages=set()))
        if stencil_us is not None:
            entry['rest_us'] += stencil_us
            continue
        if r['kernel'] == BORDER_KERNEL:
            entry['border_us'] += r['est_us']
        else:
            entry['border_us'] += r['border_us']
            entry['rest_us'] += r['est_us'] - r['border_us']
        entry['stages'].add(r['regime'])
    return [dict(entry, stages=len(entry['stages'])) for entry in shares.values()]


def totals(records):
    """One entry per (regime, pass, triton, target) with est_us and floor_us."""
    from mmspatial.kernel_traffic import floor_bytes, regime
    groups = {}
    for r in records:
        groups.setdefault((r['regime'], r['pass'], r['triton'], r['target']), []).append(r)
    out = []
    for (name, pass_, triton, target), group in groups.items():
        reg = regime(name)
        floor = floor_bytes(reg.batch, reg.channels, reg.height, reg.width)[
            0 if pass_ == 'fwd' else 1]
        entry = dict(regime=name, triton=triton, target=target, launches=len(group),
                     floor_us=floor / (MODEL['hbm_tb_s'] * 1e6),
                     floor_bytes_per_elem=floor / group[0]['elements'],
                     bytes_per_elem=sum(r['bytes_per_elem'] for r in group),
                     spill_bytes=sum(r['spill_bytes'] for r in group), **{'pass': pass_})
        if target == 'sm_90a':
            entry['est_us'] = sum(r['est_us'] for r in group)
            entry['instr_per_elem'] = sum(r['instr_per_elem'] for r in group)
            entry['ratio'] = entry['est_us'] / entry['floor_us']
        else:
            entry['est_us'] = None
        out.append(entry)
    return out


def violations(records):
    """[(kernel, triton, target, budget, detail)] of every launch that breaks a
    budget: a spill, or fewer than MIN_BLOCKS resident blocks with at least
    BUSY_PROGRAMS programs; each (kernel, triton, target, budget) once."""
    found = {}
    for r in records:
        if r['spill_bytes'] > 0:
            found.setdefault((r['kernel'], r['triton'], r['target'], 'spills'),
                             f"{r['spill_bytes']} B at {r['regime']} {r['pass']}")
        if r['programs'] >= BUSY_PROGRAMS and r['blocks_per_sm'] < MIN_BLOCKS:
            found.setdefault((r['kernel'], r['triton'], r['target'], 'occupancy'),
                             f"{r['blocks_per_sm']} block(s) of {r['num_warps']} warps, "
                             f"{r['programs']} programs at {r['regime']} {r['pass']}")
    return [(*key, detail) for key, detail in sorted(found.items())]


# ---------------------------------------------------------------------- running

def run_profiler(regimes, targets, triton_path=None, cache_dir=None, log=None):
    """Records of ``kernel_profile.py --worker`` in a fresh process, with the triton
    in ``triton_path`` first on ``sys.path`` (the pinned one when None)."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    paths = [str(triton_path)] if triton_path else []
    env['PYTHONPATH'] = os.pathsep.join(paths + [str(REPO_ROOT)] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    if cache_dir:
        env['TRITON_CACHE_DIR'] = str(cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'records.json'
        cmd = [sys.executable, str(PROFILER), '--worker', '--json', str(out),
               '--regimes', *regimes, '--targets', *targets]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if log is not None:
            log.write(result.stderr)
        if result.returncode != 0:
            from mmspatial.errors import InputError
            raise InputError(f'kernel_profile failed with triton from '
                             f'{triton_path or "the environment"}: '
                             f'{result.stderr.strip().splitlines()[-1:]}')
        return json.loads(out.read_text())


def markdown(records, total_entries, broken):
    lines = ['# Static GPU profile of the Triton kernels (estimate, no GPU)', '',
             MODEL_TEXT, '', '## Totals per pass', '',
             '| regime | pass | triton | est. µs | floor µs | est. / floor | instr / elem '
             '| bytes / elem (floor) |', '|---|---|---|---|---|---|---|---|']
    for t in total_entries:
        if t['target'] != 'sm_90a':
            continue
        lines.append(f"| {t['regime']} | {t['pass']} | {t['triton']} | {t['est_us']:.0f} | "
                     f"{t['floor_us']:.0f} | {t['ratio']:.1f}x | {t['instr_per_elem']:.0f} | "
                     f"{t['bytes_per_elem']:.1f} ({t['floor_bytes_per_elem']:.1f}) |")
    lines += ['', '## Launches on sm_90a (H200)', '',
              '| regime | pass | kernel | triton | programs | warps | regs | spill B | '
              'smem B | blocks/SM | barriers | instr / elem | bytes / elem | est. µs |',
              '|' + '---|' * 14]
    for r in records:
        if r['target'] != 'sm_90a':
            continue
        lines.append(
            f"| {r['regime']} | {r['pass']} | `{r['kernel']}` | {r['triton']} | "
            f"{r['programs']} | {r['num_warps']} | {r['regs']} | {r['spill_bytes']} | "
            f"{r['smem_bytes']} | {r['blocks_per_sm']} | {r['dynamic_barriers']} | "
            f"{r['instr_per_elem']:.0f} | {r['bytes_per_elem']:.2f} | {r['est_us']:.1f} |")
    amd = [r for r in records if r['target'] == 'gfx942']
    if amd:
        lines += ['', '## Launches on gfx942 (MI300)', '',
                  '| regime | pass | kernel | triton | warps (wave64) | VGPRs | scratch B | '
                  'LDS B | waves/SIMD | blocks/CU |', '|' + '---|' * 10]
        for r in amd:
            lines.append(f"| {r['regime']} | {r['pass']} | `{r['kernel']}` | {r['triton']} | "
                         f"{r['num_warps']} | {r['vgprs']} | {r['spill_bytes']} | "
                         f"{r['smem_bytes']} | {r['waves_per_simd']} | {r['blocks_per_sm']} |")
    lines += ['', '## Budgets', '',
              f'No spills; at least {MIN_BLOCKS} resident blocks per SM (CU) for every '
              f'launch of at least {BUSY_PROGRAMS} programs.', '']
    shares = border_shares(records)
    if shares:
        lines += [f'Border of the backward stencil (`{BORDER_KERNEL}`) against the main '
                  f'stencils (`{"` + `".join(STENCIL_KERNELS)}`, and the weight sums the '
                  'fused op\'s adjoint scan forms, at what they add to its estimate), '
                  'estimates summed over the stages profiled (budget: at most 10 % at '
                  'classification 224x224 b128):', '',
                  '| task | stages | triton | border µs | stencil µs | border / stencil |',
                  '|---|---|---|---|---|---|']
        lines += [f"| {b['task']} | {b['stages']} | {b['triton']} | {b['border_us']:.0f} | "
                  f"{b['rest_us']:.0f} | {100 * b['border_us'] / b['rest_us']:.1f} % |"
                  for b in shares]
        lines.append('')
    if broken:
        lines += ['| kernel | triton | target | budget | first case |', '|---|---|---|---|---|']
        lines += [f'| `{k}` | {t} | {g} | {b} | {d} |' for k, t, g, b, d in broken]
    else:
        lines.append('All launches meet the budgets.')
    return '\n'.join(lines) + '\n'


def build_report(out_dir, regimes, targets, triton_paths=(), pinned=True, cache_dir=None):
    """Profile, model and write ``report.json`` / ``report.md``; returns the JSON."""
    from mmspatial.fileio.atomic import atomic_write_text
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out_dir / 'compile.log', 'w') as log:
        for path in ([None] if pinned else []) + list(triton_paths):
            records += run_profiler(regimes, targets, path, cache_dir, log)
    records = [model(r) for r in records]
    report = dict(model=MODEL, mi300=MI300, records=records, totals=totals(records),
                  border=border_shares(records),
                  violations=[dict(zip(('kernel', 'triton', 'target', 'budget', 'detail'), v))
                              for v in violations(records)])
    atomic_write_text(out_dir / 'report.json', json.dumps(report, indent=1))
    atomic_write_text(out_dir / 'report.md',
                      markdown(records, report['totals'], violations(records)))
    return report


def main():
    from mmspatial.kernel_traffic import REGIMES
    from kernel_profile import TARGETS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, type=Path, help='folder for the report')
    parser.add_argument('--triton-path', action='append', default=[], type=Path,
                        help='folder holding another triton package (repeatable)')
    parser.add_argument('--skip-pinned', action='store_true',
                        help='profile only the --triton-path tritons')
    parser.add_argument('--regimes', nargs='+', default=[r.name for r in REGIMES],
                        choices=[r.name for r in REGIMES], metavar='NAME',
                        help='regimes of mmspatial.kernel_traffic.REGIMES (default: all)')
    parser.add_argument('--reduced', action='store_true',
                        help=f'the CI set: {", ".join(REDUCED_REGIMES)}')
    parser.add_argument('--targets', nargs='+', default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument('--cache-dir', type=Path, help='TRITON_CACHE_DIR of the compiles')
    args = parser.parse_args()
    from mmspatial.errors import InputError
    for path in args.triton_path:
        if not (path / 'triton' / '__init__.py').exists():
            raise InputError(f'--triton-path {path}: no triton package in that folder')
    regimes = list(REDUCED_REGIMES) if args.reduced else args.regimes
    report = build_report(args.out, regimes, args.targets, args.triton_path,
                          not args.skip_pinned, args.cache_dir)
    print((args.out / 'report.md').read_text())
    print(f'{len(report["records"])} launch records, {len(report["violations"])} '
          f'budget violations; written to {args.out}')


if __name__ == '__main__':
    from mmspatial.errors import InputError
    try:                    # needs torch and triton only (not mmspatial.utils' mmengine)
        main()
    except InputError as error:
        sys.exit(f'{Path(__file__).name}: error: {error}')
