"""The Triton state-fusion backward: exact on every pixel whichever program holds it.

Three launches compute it: the border kernel sums, per side of the image,
the preimage pixels that replicate padding sends to the outer rows and
columns (and the corner blocks); the input gradient's programs walk chunks of
consecutive pixels, gather the zero-padded transpose and add those terms (on
taller images they compute the first and last rows' themselves; in the fused
op they also form the adjoint scan's chunk summaries); the weights' kernel
walks its strips a pixel (or a few) at a step for the tap sums (and g_C; in
the fused op it writes only g_h, and the adjoint scan's steps form the sums
and g_C).
These tests split images into programs of every shape (one-pixel strips and
chunks, one-row bands, strips and bands that end inside the five-pixel
border, chunks across rows; sides cut into one-position segments, segments
that hold one corner, or both) and compare with the float64 reference, for
the state fusion alone and inside the fused SSM step (where g_h = g_y C and
the kernels also return the partials of g_C).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

pytest.importorskip('triton')

from mmspatial.ops.state_fusion import state_fusion_ref  # noqa: E402
from mmspatial.ops.structure_aware_ssm import structure_aware_ssm_ref  # noqa: E402
from mmspatial.ops.state_fusion.triton_backend import (  # noqa: E402
    check_image_offsets, padded_gh, per_block, state_fusion_triton)
from mmspatial.ops.structure_aware_ssm.triton_backend import (  # noqa: E402
    structure_aware_ssm_triton)
from mmspatial.ops.triton_launch import kernels_interpreted, override_config  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'

if DEVICE == 'cpu' and not kernels_interpreted():
    pytest.skip('the Triton kernels were imported compiled and there is no CUDA',
                allow_module_level=True)


def rel_err(out, ref):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(out).all(), 'non-finite values'
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def fusion_grads(fn, x, kernels, alpha, g):
    leaves = [t.detach().clone().requires_grad_() for t in (x, kernels, alpha)]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, g.to(out.dtype)))


# (H, W, pixels per row segment, rows per program, channels, positions per
# border segment, the first and last rows' terms from the input gradient's
# tiles or from the border launch): one-row bands (one-pixel strips and bands
# together: test_triton_kernels.py's border split test); strips and bands
# ending inside the border; images smaller than the dilations; whole tiles only
# (the kernel then gathers x unmasked); border sides in segments of 1, 2, 4
# and 16; a one-row image both ways.
SPLITS = [(11, 9, 2, 3, 2, 4, True), (12, 12, 4, 5, 3, 1, False), (4, 3, 2, 2, 3, 2, True),
          (1, 6, 2, 1, 3, 4, True), (1, 6, 2, 1, 3, 4, False), (6, 1, 1, 4, 3, 2, True),
          (9, 8, 4, 4, 4, 16, False), (13, 7, 4, 4, 2, 8, True)]


@pytest.mark.parametrize('height,width,block_w,rows,channels,border_block,row_terms', SPLITS)
def test_state_fusion_gradients_over_program_splits(height, width, block_w, rows, channels,
                                                    border_block, row_terms):
    gen = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(1, channels, height, width, generator=gen, dtype=torch.float64)
    kernels = torch.randn(3, channels, 3, 3, generator=gen, dtype=torch.float64)
    alpha = torch.randn(3, generator=gen, dtype=torch.float64)
    g = torch.randn(1, channels, height, width, generator=gen, dtype=torch.float64)
    ref = fusion_grads(state_fusion_ref, x, kernels, alpha, g)
    with override_config(poison_outputs=True, fusion_bwd_block_p=block_w,
                         fusion_bwd_rows=rows, fusion_block_d=2, fusion_block_p=block_w,
                         fusion_bwd_input_block_p=block_w, fusion_border_block_p=border_block,
                         fusion_row_terms_min_height=1 if row_terms else height + 1):
        out = fusion_grads(state_fusion_triton, *(t.float().to(DEVICE)
                                                  for t in (x, kernels, alpha, g)))
    for name, o, r in zip(('out', 'x', 'kernels', 'alpha'), out, ref):
        assert rel_err(o, r) < 2e-6, name


# (H, W, weights' columns per strip, rows per band, border segment, the rows'
# terms from the input gradient, the weights' and the input gradient's pixels
# a step: one as compiled, two with partial steps (chunks of 8), or the whole
# strip or chunk; the adjoint scan's steps per iteration, which carry the
# fusion's weight sums: one as compiled, or tiles; channels: 4 fill the
# blocks of 2, 3 do not)
FUSED_SPLITS = [(9, 7, 2, 4, 4, True, 1, 1, 1, 3), (5, 13, 4, 2, 2, False, None, None, None, 4),
                (7, 5, 4, 3, 2, False, 2, 1, 2, 3), (11, 3, 2, 5, 4, True, None, 2, 1, 4),
                (1, 11, 4, 1, 2, True, None, 1, 1, 3), (6, 1, 1, 2, 2, True, 1, 1, 1, 4),
                (2, 20, 4, 2, 2, False, 1, 1, 1, 4)]


@pytest.mark.parametrize('height,width,block_w,rows,border_block,row_terms,step_w,'
                         'input_step,scan_step,channels', FUSED_SPLITS)
def test_fused_ssm_gradients_over_program_splits(height, width, block_w, rows, border_block,
                                                 row_terms, step_w, input_step, scan_step,
                                                 channels):
    """The fused op's backward (C-weighted g_h; the adjoint scan's chunk
    summaries from the input gradient's walk; the fusion's weight sums and g_C
    partials from the adjoint scan, its rows and columns carried a pixel a
    step) on split images."""
    gen = torch.Generator().manual_seed(7)
    shapes = dict(u=(1, channels, height, width), delta=(1, channels, height, width),
                  B=(1, 1, height, width), C=(1, 1, height, width),
                  kernels=(3, channels, 3, 3))
    inputs = {k: torch.randn(*s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    inputs['A'] = -0.5 - torch.rand(channels, 1, generator=gen, dtype=torch.float64)
    inputs.update(Dskip=torch.randn(channels, generator=gen, dtype=torch.float64),
                  alpha=torch.randn(3, generator=gen, dtype=torch.float64),
                  delta_bias=torch.randn(channels, generator=gen, dtype=torch.float64))
    names = ('u', 'delta', 'A', 'B', 'C', 'Dskip', 'kernels', 'alpha', 'delta_bias')
    g = torch.randn(1, channels, height, width, generator=gen, dtype=torch.float64)

    def run(fn, dtype, device):
        leaves = [inputs[n].to(device, dtype).requires_grad_() for n in names]
        y = fn(*leaves)
        return (y, *torch.autograd.grad(y, leaves, g.to(device, y.dtype)))
    ref = run(structure_aware_ssm_ref, torch.float64, 'cpu')
    with override_config(poison_outputs=True, fusion_bwd_block_p=block_w,
                         fusion_bwd_rows=rows, fusion_block_d=2, scan_block_l=8,
                         fusion_block_p=block_w, fusion_border_block_p=border_block,
                         fusion_row_terms_min_height=1 if row_terms else height + 1,
                         fusion_bwd_step_w=step_w, fusion_bwd_input_step=input_step,
                         scan_block_t=scan_step, scan_block_d=2, scan_block_c=2):
        out = run(structure_aware_ssm_triton, torch.float32, DEVICE)
    for name, o, r in zip(('y',) + names, out, ref):
        assert rel_err(o, r) < 1e-5, name


@pytest.mark.parametrize('step_w,channels', [(1, 4), (1, 3), (2, 3)])
def test_weights_walk_in_steps(step_w, channels):
    """The weights' sums a pixel a step (as compiled, ``fusion_bwd_step_w`` 1)
    or two, with a partial step at a strip's end (7 columns in strips of 4);
    the channels filling their block (4: the loads of g unmasked) or not."""
    gen = torch.Generator().manual_seed(11)
    x, g = (torch.randn(1, channels, 5, 7, generator=gen, dtype=torch.float64)
            for _ in range(2))
    kernels = torch.randn(3, channels, 3, 3, generator=gen, dtype=torch.float64)
    alpha = torch.randn(3, generator=gen, dtype=torch.float64)
    ref = fusion_grads(state_fusion_ref, x, kernels, alpha, g)
    with override_config(poison_outputs=True, fusion_bwd_block_p=4, fusion_bwd_rows=2,
                         fusion_bwd_step_w=step_w, fusion_bwd_block_d=4, fusion_block_d=2):
        out = fusion_grads(state_fusion_triton, *(t.float().to(DEVICE)
                                                  for t in (x, kernels, alpha, g)))
    for name, o, r in zip(('out', 'x', 'kernels', 'alpha'), out, ref):
        assert rel_err(o, r) < 2e-6, name


@pytest.mark.parametrize('height,width,step,channels,row_terms', [
    (5, 7, 1, 4, True), (5, 7, 1, 3, False), (5, 7, 2, 3, True), (1, 7, 1, 3, True),
    (6, 1, 1, 3, False)])
def test_input_gradient_walk_in_steps(height, width, step, channels, row_terms):
    """The input gradient a pixel a step (as compiled, ``fusion_bwd_input_step``
    1) or two, in programs of 8 pixels across rows of 7 (a partial step at the
    image's end), along one row, down one column; the channels filling their
    block of 4 or not (the gathers of g_h read past D unmasked); the first and
    last rows' terms in the walk or from the border launch."""
    gen = torch.Generator().manual_seed(13)
    x, g = (torch.randn(1, channels, height, width, generator=gen, dtype=torch.float64)
            for _ in range(2))
    kernels = torch.randn(3, channels, 3, 3, generator=gen, dtype=torch.float64)
    alpha = torch.randn(3, generator=gen, dtype=torch.float64)
    ref = fusion_grads(state_fusion_ref, x, kernels, alpha, g)
    with override_config(poison_outputs=True, fusion_bwd_input_step=step,
                         fusion_bwd_input_block_p=8, fusion_bwd_input_block_d=4,
                         fusion_block_d=2,
                         fusion_row_terms_min_height=1 if row_terms else height + 1):
        out = fusion_grads(state_fusion_triton, *(t.float().to(DEVICE)
                                                  for t in (x, kernels, alpha, g)))
    for name, o, r in zip(('out', 'x', 'kernels', 'alpha'), out, ref):
        assert rel_err(o, r) < 2e-6, name


def test_backward_is_bitwise_deterministic():
    """No atomics: the same inputs give the same bits, border pixels included."""
    gen = torch.Generator().manual_seed(3)
    x, g = (torch.randn(1, 2, 6, 7, generator=gen).to(DEVICE) for _ in range(2))
    kernels, alpha = torch.randn(3, 2, 3, 3).to(DEVICE), torch.randn(3).to(DEVICE)
    with override_config(fusion_bwd_block_p=4, fusion_bwd_rows=3, fusion_block_d=2):
        first, second = (fusion_grads(state_fusion_triton, x, kernels, alpha, g)
                         for _ in range(2))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_weights_per_channel_block():
    """Tap k of channel block j at [j, k]; channels past D are zero weights."""
    weights = torch.arange(25 * 5, dtype=torch.float32).view(25, 5)
    blocked = per_block(weights, 2)
    assert blocked.shape == (3, 25, 2) and blocked.is_contiguous()
    assert torch.equal(blocked[1, 7], weights[7, 2:4])
    assert torch.equal(blocked[2, :, 0], weights[:, 4])
    assert (blocked[2, :, 1] == 0).all()


def test_padded_gh_reaches_past_the_last_image():
    """The input gradient reads 128 channels at a time without masks: at D 192
    the buffer extends past the last image by the two 32-channel blocks its
    last program reaches; an image whose padded g_h (tail included) spans
    2**31 elements is refused."""
    gh = padded_gh(2, 192, 4, 5, 32, 'meta', 128)
    pixels = (4 + 2 * 5 + 1) * (5 + 5)
    assert gh.shape == (2, 6, pixels, 32)
    assert gh.untyped_storage().nbytes() == (2 * 6 + 2) * pixels * 32 * 4
    assert padded_gh(2, 128, 4, 5, 32, 'meta', 128).untyped_storage().nbytes() == \
        2 * 4 * pixels * 32 * 4
    with pytest.raises(ValueError, match=r'spans 2\*\*31'):
        padded_gh(1, 4096, 1000, 1000, 32, 'meta', 128)


def test_image_spanning_int32_is_refused():
    """Offsets within an image are int32: a larger image gets a clear error."""
    fine = torch.empty_strided((4, 2 ** 15, 2 ** 15), (2 ** 30, 2 ** 15, 1), device='meta')
    check_image_offsets('op', fine, None)
    huge = torch.empty_strided((1, 2 ** 16, 2 ** 16), (2 ** 32, 2 ** 16, 1), device='meta')
    with pytest.raises(ValueError, match='2\\*\\*31'):
        check_image_offsets('op', fine, huge)
