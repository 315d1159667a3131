"""Check and time the Triton operators on a GPU, in one command; write markdown.

    python -m pip install --no-deps --no-build-isolation -e .   # once, for mmspatial.ops
    python tools/gpu_check.py --out DIR [--sweep]
    TRITON_INTERPRET=1 python tools/gpu_check.py --smoke --out DIR   # CI, on a CPU

Steps, in this order, each in its own process under its own time limit, each
writing ``DIR/<step>.md`` (and a log) as it finishes; ``DIR/summary.md`` is one
markdown document that pastes into ``benchmarks/RESULTS.md``:

1. ``env``: versions, GPU, SM count and a device-to-device copy bandwidth;
2. ``tests``: ``tests/ops/test_triton_kernels.py`` (its CUDA section included);
3. ``check``: the fused op at detection stage 1 in float32, bfloat16 and
   float16, values and every gradient against the PyTorch backend in float64,
   NaN-free and bitwise repeatable; the unfused ops in bfloat16;
4. ``traffic``: bytes per element of every launch (``mmspatial.kernel_traffic``);
5. ``time``: CUDA-event medians per regime of the fused op (forward and
   forward+backward), of each launcher alone, of the PyTorch backend and of a
   public composition (flash-linear-attention's ``chunk_hgrn`` when it imports,
   plus three dilated depthwise ``F.conv2d``), and the achieved bandwidth;
6. ``backbone``: Spatial-Mamba-T forward and forward+backward at 224x224 batch
   128 and 800x1344 batch 2 beside timm's Swin-T and ConvNeXt-T (needs
   mmengine and mmcv importable, and timm);
7. ``amp``: Spatial-Mamba-T training steps under float16 autocast with a
   gradient scaler: finite losses and gradients;
8. ``sweep`` (``--sweep``): block sizes and warps, one setting at a time,
   fused forward+backward at detection stage 1.

Needs only torch and triton for steps 1-5 (timm for 6). ``--smoke`` runs every
step at tiny shapes; without a GPU, under ``TRITON_INTERPRET=1``, the kernels
run on CPU tensors (timings meaningless; the table says so). Without either it
stops at once.

Each step's process first compiles every kernel specialisation the step will
launch (``tools/analysis/first_contact.py``: its launches replayed on ``meta``
tensors, the tests step's from the recording ``first_contact.TESTS_LAUNCHES``)
into the Triton cache, in parallel on the machine's cores, so that its
launches are cache hits: compiled one launch at a time, a cold cache would
cost the tests step more than its limit (``benchmarks/RESULTS.md``, "First
contact", which also gives this precompile's time). It counts against the
step's limit; on a warm cache it costs the replay, the workers' start (a few
seconds) and the lookups. Under the interpreter and in ``--smoke`` nothing is
precompiled.
"""
import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# step: seconds allowed on a GPU (about 7 minutes in all without the sweep); a
# smoke run under the interpreter gets SMOKE_SLACK times as long
SMOKE_SLACK = 4
STEPS = {'env': 30, 'tests': 120, 'check': 60, 'traffic': 20, 'time': 90,
         'backbone': 75, 'amp': 30, 'sweep': 120}
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 3e-3}
SMOKE_REGIME = ('smoke 6x5', 1, 4, 6, 5)
# steps whose kernels are compiled before they run (precompile)
PRECOMPILED = ('tests', 'check', 'time', 'backbone', 'amp', 'sweep')


def device():
    if torch.cuda.is_available():
        return torch.device('cuda')
    from mmspatial.ops._backend import triton_interpreter_enabled
    if triton_interpreter_enabled():
        return torch.device('cpu')
    raise SystemExit('gpu_check needs a CUDA device (or, to check the script only, '
                     '--smoke with TRITON_INTERPRET=1)')


def regimes(args):
    """The stage-1 regimes of the three tasks (``mmspatial.kernel_traffic.STAGE_ONE``)."""
    from mmspatial.kernel_traffic import STAGE_ONE
    return [SMOKE_REGIME] if args.smoke else list(STAGE_ONE)


def rel_err(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


# --------------------------------------------------------------------------- steps

def step_env(args, out_dir):
    dev = device()
    import triton
    info = dict(python=platform.python_version(), torch=torch.__version__,
                triton=triton.__version__, device=str(dev))
    nbytes = (16 << 20) if args.smoke else (1 << 30)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    if dev.type == 'cuda':
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu=props.name, sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2 ** 30, 1))
    from mmspatial.benchmarking import time_ms
    ms = time_ms(lambda: dst.copy_(src), 3 if args.smoke else 20, 2, dev)
    info['copy_gbps'] = 2 * nbytes / ms / 1e6          # bytes read + written
    (out_dir / 'env.json').write_text(json.dumps(info, indent=1))
    lines = table(['python', 'torch', 'triton', 'device', 'SMs', 'copy GB/s (read+write)'],
                  [(info['python'], info['torch'], info['triton'], info.get('gpu', str(dev)),
                    info.get('sms', 'n/a'), f"{info['copy_gbps']:.0f}")])
    return lines, True


def step_tests(args, out_dir):
    cmd = [sys.executable, '-m', 'pytest', 'tests/ops/test_triton_kernels.py', '-q',
           '-p', 'no:cacheprovider']
    if args.smoke:
        cmd += ['-k', 'shape_errors or autograd_function_names']
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    (out_dir / 'tests.log').write_text(result.stdout + result.stderr)
    summary = [line for line in result.stdout.splitlines() if line.strip()][-1:]
    return [f'`{" ".join(cmd[1:])}`: {summary[0] if summary else "no output"}'], \
        result.returncode == 0


def _grads(fn, inputs, grad):
    out = fn(*inputs)
    leaves = [t for t in inputs if t is not None and t.requires_grad]
    return (out, *torch.autograd.grad(out, leaves, grad.to(out.dtype)))


def step_check(args, out_dir):
    from mmspatial.benchmarking import fused_args, scan_args, ssm_inputs
    from mmspatial.ops.selective_scan import selective_scan_ref
    from mmspatial.ops.selective_scan.triton_backend import selective_scan_triton
    from mmspatial.ops.state_fusion import state_fusion_ref
    from mmspatial.ops.state_fusion.triton_backend import state_fusion_triton
    from mmspatial.ops.structure_aware_ssm.torch_backend import structure_aware_ssm_torch
    from mmspatial.ops.structure_aware_ssm.triton_backend import structure_aware_ssm_triton
    dev = device()
    _, batch, channels, height, width = SMOKE_REGIME if args.smoke else regimes(args)[0]
    names = ('y', 'u', 'delta', 'A', 'B', 'C', 'Dskip', 'kernels', 'alpha', 'delta_bias')
    rows, ok = [], True
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = ssm_inputs(batch, channels, height, width, dtype=dtype, device=dev,
                       requires_grad=True)
        x64 = {k: v.detach().double().requires_grad_() for k, v in x.items()}
        grad = torch.randn(x['u'].shape, device=dev, generator=torch.Generator(
            device=dev).manual_seed(0))
        runs = [_grads(structure_aware_ssm_triton, fused_args(x), grad) for _ in range(2)]
        ref = _grads(structure_aware_ssm_torch, fused_args(x64), grad.double())
        repeatable = all(torch.equal(a, b) for a, b in zip(*runs))
        errors = [rel_err(got, want) for got, want in zip(runs[0], ref)]
        finite = all(bool(torch.isfinite(t).all()) for t in runs[0])
        passed = repeatable and finite and max(errors) <= TOLERANCE[dtype]
        ok &= passed
        worst = names[errors.index(max(errors))]
        rows.append((f'fused, {batch}x{channels}x{height}x{width}', str(dtype)[6:],
                     f'{max(errors):.1e} ({worst})', finite, repeatable,
                     'ok' if passed else 'FAIL'))
    x = ssm_inputs(batch, channels, height, width, dtype=torch.bfloat16, device=dev,
                   requires_grad=True)
    x32 = {k: v.detach().float().requires_grad_() for k, v in x.items()}
    grad = torch.randn(x['u'].shape, device=dev)
    for name, fast, ref_fn, inputs, inputs32, g in [
            ('selective_scan', lambda *a: selective_scan_triton(*a, True),
             selective_scan_ref, scan_args(x), scan_args(x32), grad.flatten(2)[:, :, None]),
            ('state_fusion', state_fusion_triton, state_fusion_ref,
             (x['u'], x['kernels'], x['alpha']), (x32['u'], x32['kernels'], x32['alpha']),
             grad)]:
        got, want = _grads(fast, inputs, g), _grads(ref_fn, inputs32, g)
        errors = [rel_err(a, b) for a, b in zip(got, want)]
        finite = all(bool(torch.isfinite(t).all()) for t in got)
        passed = finite and max(errors) <= TOLERANCE[torch.bfloat16]
        ok &= passed
        rows.append((name, 'bfloat16', f'{max(errors):.1e}', finite, 'not checked',
                     'ok' if passed else 'FAIL'))
    tolerances = ', '.join(f'{str(k)[6:]} {v:.0e}' for k, v in TOLERANCE.items())
    lines = ['Relative errors ||out - ref|| / ||ref||, the worst of the value and every '
             'gradient; reference: the PyTorch backend in float64 (fused op), the `*_ref` '
             f'ops in float32 (unfused). Tolerances: {tolerances}.',
             ''] + table(['op', 'dtype', 'max rel. error', 'finite', 'bitwise repeatable',
                          'status'], rows)
    return lines, ok


def step_traffic(args, out_dir):
    from mmspatial.kernel_traffic import (bytes_per_element, fused_op_traffic,
                                          minimum_bytes_per_element)
    rows = []
    for name, batch, channels, height, width in regimes(args):
        traffic = fused_op_traffic(batch, channels, height, width)
        shape = (batch, channels, height, width)
        for direction in ('forward', 'backward'):
            for launch in traffic[direction]:
                rows.append((name, direction, f'`{launch[0]}`',
                             f'{bytes_per_element([launch], *shape):.2f}'))
            total = bytes_per_element(traffic[direction], *shape)
            rows.append((name, direction, '**total**', f'**{total:.2f}**'))
    low_fwd, low_bwd = minimum_bytes_per_element()
    lines = [f'Bytes per element of (batch, D, L), bfloat16 u and delta, each tensor '
             f'counted once per launch; floors: forward {low_fwd}, backward {low_bwd}.', '']
    return lines + table(['regime', 'pass', 'launch', 'bytes / element'], rows), True


def _composition():
    """flash-linear-attention's chunk_hgrn scan and three dilated depthwise conv2d:
    the same math from public parts (None when fla does not import)."""
    try:
        from fla.ops.hgrn import chunk_hgrn
    except ImportError:
        return None
    import torch.nn.functional as F

    from mmspatial.ops.state_fusion import DILATIONS

    def composed(u, delta, A, B, C, Dskip, kernels, alpha, delta_bias):
        batch, channels, height, width = u.shape
        dt = F.softplus(delta.float() + delta_bias[:, None, None])
        gate = (dt * A[:, 0, None, None]).flatten(2).transpose(1, 2)       # (b, L, D)
        drive = (dt * B.float() * u.float()).flatten(2).transpose(1, 2)
        states, _ = chunk_hgrn(drive, gate)
        x = states.transpose(1, 2).reshape(batch, channels, height, width)
        h = 0
        for i, dilation in enumerate(DILATIONS):
            h = h + alpha[i] * F.conv2d(F.pad(x, (dilation,) * 4, mode='replicate'),
                                        kernels[i, :, None], dilation=dilation,
                                        groups=channels)
        return h * C.float() + Dskip[:, None, None] * u.float()
    return composed


def step_time(args, out_dir):
    from mmspatial.benchmarking import forward_backward, fused_args, ssm_inputs, time_ms
    from mmspatial.kernel_traffic import bytes_per_element, fused_op_traffic
    from mmspatial.ops.selective_scan.triton_backend import (AdjointFusionSums,
                                                             AdjointSummaries, scan_backward,
                                                             scan_forward)
    from mmspatial.ops.state_fusion.triton_backend import (fold_tap_weights,
                                                           fusion_backward, fusion_forward)
    from mmspatial.ops.structure_aware_ssm.torch_backend import structure_aware_ssm_torch
    from mmspatial.ops.structure_aware_ssm.triton_backend import structure_aware_ssm_triton
    from mmspatial.ops.triton_launch import sequence_view
    dev = device()
    env = json.loads((out_dir / 'env.json').read_text()) if (out_dir / 'env.json').exists() \
        else {}
    copy_gbps = env.get('copy_gbps')
    repeats, warmup = (1, 0) if args.smoke else (20, 3)
    composition = _composition()
    rows = []
    for name, batch, channels, height, width in regimes(args):
        x = ssm_inputs(batch, channels, height, width, dtype=torch.bfloat16, device=dev)
        xg = ssm_inputs(batch, channels, height, width, dtype=torch.bfloat16, device=dev,
                        requires_grad=True)
        args_ = fused_args(x)
        weights = fold_tap_weights(x['kernels'], x['alpha'])
        u, delta = sequence_view(x['u']), sequence_view(x['delta'])
        B, C = sequence_view(x['B']), sequence_view(x['C'])[..., 0]
        states = scan_forward(u, delta, x['A'], B, x['delta_bias'])[..., 0]
        y = torch.empty(x['u'].shape, device=dev, memory_format=torch.channels_last)
        g_x = torch.empty_like(states)
        g_y = torch.randn_like(y)
        # the fused op's backward: the input gradient forms the adjoint scan's
        # chunk summaries, the adjoint scan the fusion's weight sums
        summaries = AdjointSummaries.allocate(delta, x['A'], x['delta_bias'])
        fusion_sums = AdjointFusionSums.allocate(C, weights, height, width, delta)

        def ms(fn):
            with torch.no_grad():
                return time_ms(fn, repeats, warmup, dev)
        fwd = ms(lambda: structure_aware_ssm_triton(*args_))
        fwd_bwd = time_ms(forward_backward(structure_aware_ssm_triton, fused_args(xg)),
                          repeats, warmup, dev)
        traffic = fused_op_traffic(batch, channels, height, width)
        fwd_bytes = bytes_per_element(traffic['forward'], batch, channels, height, width)
        gbps = fwd_bytes * batch * channels * height * width / fwd / 1e6
        share = f'{100 * gbps / copy_gbps:.0f} %' if copy_gbps else 'n/a'
        rows.append((name, 'Triton fused', f'{fwd:.3f}', f'{fwd_bwd:.3f}',
                     f'{gbps:.0f} GB/s, {share} of copy', '1.0x'))
        launchers = [
            ('scan forward (3 launches)', lambda: scan_forward(u, delta, x['A'], B,
                                                               x['delta_bias'])),
            ('fusion + readout forward', lambda: fusion_forward(
                states, weights, height, width, sequence_view(y), C=C, u=u,
                Dskip=x['Dskip'])),
            ('fusion backward: g_h, border, input gradient', lambda: fusion_backward(
                sequence_view(g_y), states, weights, height, width, g_x, C=C,
                adjoint=summaries, weight_sums=False)),
            ('adjoint scan + weight sums (2 launches)', lambda: scan_backward(
                g_x[..., None], states[..., None], u, delta, x['A'], B, x['delta_bias'],
                g_y=sequence_view(g_y), Dskip=x['Dskip'], summaries=summaries,
                fusion=fusion_sums)),
        ]
        for label, fn in launchers:
            rows.append((name, f'  {label}', f'{ms(fn):.3f}', '', '', ''))
        others = [('PyTorch backend', structure_aware_ssm_torch)]
        if composition is not None:
            others.append(('fla chunk_hgrn + 3 conv2d', composition))
        for label, fn in others:
            other_fwd = ms(lambda: fn(*args_))
            other_fwd_bwd = time_ms(forward_backward(fn, fused_args(xg)), repeats, warmup,
                                    dev)
            rows.append((name, label, f'{other_fwd:.3f}', f'{other_fwd_bwd:.3f}', '',
                         f'{other_fwd_bwd / fwd_bwd:.1f}x'))
        if composition is None:
            rows.append((name, 'fla chunk_hgrn + 3 conv2d', 'fla does not import', '', '',
                         ''))
    note = ('CPU under the Triton interpreter: timings meaningless' if dev.type == 'cpu'
            else env.get('gpu', str(dev)))
    lines = [f'{note}; bfloat16 u, delta, B, C; medians of {repeats} (CUDA events); '
             'last column: fwd+bwd time over the fused op\'s.', '']
    return lines + table(['regime', 'implementation', 'fwd ms', 'fwd+bwd ms',
                          'fwd bandwidth', 'fwd+bwd vs fused'], rows), True


def _backbones(smoke):
    """[(name, module or error string)] of the compared backbones."""
    found = []
    try:
        from mmspatial.models import SpatialMamba
        arch = dict(dims=8, depths=[1, 1, 1, 1], d_state=1) if smoke else 'tiny'
        found.append(('Spatial-Mamba-T', SpatialMamba(arch=arch)))
    except Exception as error:  # the backbone needs mmengine and mmcv
        found.append(('Spatial-Mamba-T', f'does not import: {type(error).__name__}: {error}'))
    for label, name in (('Swin-T', 'swin_tiny_patch4_window7_224'),
                        ('ConvNeXt-T', 'convnext_tiny')):
        try:
            import timm
            kwargs = dict(features_only=True)
            if name.startswith('swin'):
                kwargs.update(strict_img_size=False, dynamic_img_pad=True)
            found.append((label, timm.create_model(name, pretrained=False, **kwargs)))
        except Exception as error:
            found.append((label, f'unavailable: {type(error).__name__}: {error}'))
    return found


def step_backbone(args, out_dir):
    from mmspatial.benchmarking import time_ms
    dev = device()
    shapes = [(1, 64, 64)] if args.smoke else [(128, 224, 224), (2, 800, 1344)]
    repeats, warmup = (1, 0) if args.smoke else (10, 3)
    rows = []
    for name, model in _backbones(args.smoke):
        if isinstance(model, str):
            rows.append((name, '', model, '', ''))
            continue
        model = model.to(dev).to(memory_format=torch.channels_last)
        for batch, height, width in shapes:
            image = torch.randn(batch, 3, height, width, device=dev).contiguous(
                memory_format=torch.channels_last)
            autocast = torch.autocast(dev.type, dtype=torch.bfloat16)

            def forward():
                with torch.no_grad(), autocast:
                    model(image)

            def forward_backward():
                with autocast:
                    outs = model(image)
                sum(o.float().mean() for o in outs).backward()
            try:
                model.eval()
                fwd = time_ms(forward, repeats, warmup, dev)
                model.train()
                fwd_bwd = time_ms(forward_backward, repeats, warmup, dev)
                rows.append((name, f'{batch}x3x{height}x{width}', f'{fwd:.2f}',
                             f'{fwd_bwd:.2f}', ''))
            except Exception as error:
                rows.append((name, f'{batch}x3x{height}x{width}', 'failed', '',
                             f'{type(error).__name__}: {str(error)[:120]}'))
    lines = ['Backbones (feature pyramids), bfloat16 autocast, channels-last, TF32 '
             f'{"on" if torch.backends.cuda.matmul.allow_tf32 else "off"}; medians of '
             f'{repeats} (ms).', '']
    ok = any(row[2] not in ('failed',) and row[1] for row in rows)
    return lines + table(['backbone', 'input', 'fwd ms', 'fwd+bwd ms', 'note'], rows), ok


def step_amp(args, out_dir):
    dev = device()
    try:
        from mmspatial.models import SpatialMamba
    except Exception as error:
        return [f'skipped: mmspatial.models does not import ({type(error).__name__}: '
                f'{error}); carry mmengine and mmcv wheels'], True
    arch = dict(dims=8, depths=[1, 1, 1, 1], d_state=1) if args.smoke else 'tiny'
    model = SpatialMamba(arch=arch).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.float16     # the GradScaler path, on a CPU too (torch >= 2.3)
    scaler = torch.amp.GradScaler(dev.type)
    size, batch = (64, 1) if args.smoke else (224, 16)
    losses, finite_grads = [], True
    for _ in range(2 if args.smoke else 5):
        image = torch.randn(batch, 3, size, size, device=dev)
        with torch.autocast(dev.type, dtype=dtype):
            loss = sum(o.float().square().mean() for o in model(image))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite_grads &= all(bool(torch.isfinite(p.grad).all())
                            for p in model.parameters() if p.grad is not None)
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    ok = finite_grads and all(map(lambda v: v == v and abs(v) != float('inf'), losses))
    return [f'{str(dtype)[6:]} autocast with GradScaler (scale {scaler.get_scale():g}), '
            f'batch {batch} at {size}x{size}: losses {", ".join(f"{v:.4f}" for v in losses)}; '
            f'gradients finite: {finite_grads}'], ok


def step_sweep(args, out_dir):
    from mmspatial.benchmarking import forward_backward, fused_args, ssm_inputs, time_ms
    from mmspatial.ops.structure_aware_ssm.triton_backend import structure_aware_ssm_triton
    from mmspatial.ops.triton_launch import config, override_config
    dev = device()
    _, batch, channels, height, width = SMOKE_REGIME if args.smoke else regimes(args)[0]
    xg = ssm_inputs(batch, channels, height, width, dtype=torch.bfloat16, device=dev,
                    requires_grad=True)
    run = forward_backward(structure_aware_ssm_triton, fused_args(xg))
    repeats, warmup = (1, 0) if args.smoke else (10, 2)
    base = time_ms(run, repeats, warmup, dev)
    rows = [('defaults', '', f'{base:.3f}', '1.00')]
    choices = {'scan_block_l': (32, 64, 128), 'scan_block_d': (32, 64, 128),
               'scan_block_t': (1, 2, 4), 'scan_fwd_warps': (1, 2, 4),
               'scan_bwd_warps': (1, 2, 4),
               'fusion_block_p': (16, 32, 64), 'fusion_block_d': (16, 32, 64),
               'fusion_fwd_warps': (2, 4, 8), 'fusion_bwd_block_p': (8, 16, 32),
               'fusion_bwd_rows': (8, 16, 32), 'fusion_bwd_block_d': (64,),
               'fusion_bwd_step_w': (2,),
               'fusion_bwd_input_block_d': (64,), 'fusion_bwd_input_step': (2,),
               'fusion_bwd_input_warps': (2,), 'scan_carry_block_d': (4, 16)}
    if args.smoke:              # the plumbing only: two settings
        choices = {'scan_block_l': (32,), 'fusion_block_d': (16,)}
    for key, values in choices.items():
        for value in values:
            if value == config()[key]:
                continue
            with override_config(**{key: value}):
                ms = time_ms(run, repeats, warmup, dev)
            rows.append((key, value, f'{ms:.3f}', f'{base / ms:.2f}'))
    return [f'Fused fwd+bwd at {batch}x{channels}x{height}x{width}, bfloat16, one '
            'setting changed at a time (speed-up over the defaults).', ''] + table(
        ['setting', 'value', 'fwd+bwd ms', 'speed-up'], rows), True


# ---------------------------------------------------------------------- driver

def precompile(name, args):
    """Compile the kernels step ``name`` launches into the Triton cache, in
    parallel (``first_contact.precompile``); one log line. A failure here only
    leaves the step to compile as it launches."""
    from mmspatial.ops._backend import triton_interpreter_enabled
    if name not in PRECOMPILED:
        return
    if args.smoke or triton_interpreter_enabled():
        why = 'the interpreter runs the kernels' if triton_interpreter_enabled() \
            else 'smoke shapes'
        print(f'[precompile] {name}: skipped ({why})', flush=True)
        return
    sys.path.insert(0, str(REPO_ROOT / 'tools' / 'analysis'))
    try:
        from first_contact import precompile as compile_step
        compile_step(name, log=lambda line: print(line, flush=True))
    except Exception as error:    # the step still runs, compiling as it launches
        print(f'[precompile] {name}: failed, {type(error).__name__}: {error}', flush=True)


def run_step(name, args, out_dir):
    """Run one step in this process and write ``<name>.md``; exit 1 if it failed."""
    precompile(name, args)
    torch.manual_seed(0)
    lines, ok = globals()[f'step_{name}'](args, out_dir)
    (out_dir / f'{name}.md').write_text('\n'.join(lines) + '\n')
    sys.exit(0 if ok else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, type=Path, help='folder for the results')
    parser.add_argument('--smoke', action='store_true', help='tiny shapes, each timed function run once')
    parser.add_argument('--sweep', action='store_true', help='also sweep block sizes')
    parser.add_argument('--steps', help='comma-separated subset of ' + ','.join(STEPS))
    parser.add_argument('--step', choices=list(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        from mmspatial.ops._backend import triton_interpreter_enabled
    except ImportError as error:
        raise SystemExit(f'cannot import mmspatial.ops ({error}): run '
                         '`python -m pip install --no-deps --no-build-isolation -e .` '
                         'in the repository first') from error
    if not torch.cuda.is_available() and not triton_interpreter_enabled():
        raise SystemExit('gpu_check: no CUDA device here; on a CPU only the script can '
                         'be checked: TRITON_INTERPRET=1 python tools/gpu_check.py --smoke '
                         '--out DIR')
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:
        run_step(args.step, args, args.out)
    steps = args.steps.split(',') if args.steps else [s for s in STEPS if s != 'sweep'
                                                       or args.sweep]
    summary = [f'## GPU check, {time.strftime("%Y-%m-%d")}'
               f'{" (smoke)" if args.smoke else ""}', '']
    statuses = []
    for name in steps:
        start = time.time()
        cmd = [sys.executable, __file__, '--step', name, '--out', str(args.out)]
        cmd += ['--smoke'] if args.smoke else []
        limit = STEPS[name] * (SMOKE_SLACK if args.smoke else 1)
        try:
            result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                                    timeout=limit)
            status = 'ok' if result.returncode == 0 else f'FAILED (exit {result.returncode})'
            log = result.stdout + result.stderr
        except subprocess.TimeoutExpired as expired:
            status = f'TIMED OUT after {limit} s'
            log = str(expired.stdout or '') + str(expired.stderr or '')
        (args.out / f'{name}.log').write_text(log)
        statuses.append((name, status, f'{time.time() - start:.0f}'))
        print(f'[gpu_check] {name}: {status} ({time.time() - start:.0f} s)', flush=True)
        section = args.out / f'{name}.md'
        summary += [f'### {name}', '']
        if section.exists():
            summary.append(section.read_text())
        else:
            summary += [f'{status}; the end of its log:', '', '```',
                        *log.splitlines()[-15:], '```']
        summary.append('')
    summary[2:2] = table(['step', 'status', 'seconds'], statuses) + ['']
    (args.out / 'summary.md').write_text('\n'.join(summary))
    print('\n'.join(summary))
    sys.exit(0 if all(s == 'ok' for _, s, _ in statuses) else 1)


if __name__ == '__main__':
    main()
