"""Effective receptive field (ERF) of a Spatial-Mamba stage, as a heat-map PNG.

    python tools/analysis/visualize_erf.py --arch t --checkpoint CKPT --out erf.png
    python tools/analysis/visualize_erf.py CONFIG [--checkpoint CKPT] \
        [--stage 3] [--images DIR_OR_GLOB] [--num-images 16] [--size 512]

For each image, the gradient of the stage output at its centre pixel (summed
over channels after a ReLU, as in RepLKNet's ERF study) is taken with respect
to the input; its absolute value, summed over colour channels, is averaged
over the images, scaled by log10(1 + x) and normalised to [0, 1]. Without
``--images`` the inputs are Gaussian noise.

The paper's claim is that state fusion removes the directional bias of a
scan-based model: a single row-major scan alone lets the centre see only what
came before it (the rows above, the pixels to its left). The tool prints the
share of the ERF mass above vs below and left vs right of the centre (0.5 is
symmetric), and the side of the square around the centre that holds 20%,
50% and 90% of it.
"""
import glob
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from mmspatial.errors import MissingFileError
from mmspatial.models import SpatialMamba
from mmspatial.utils import backbone_cfg, load_config, run_tool, tool_parser

# ImageNet statistics, RGB, 0..255 (the configs' data_preprocessor).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def build_backbone(config=None, arch=None, stage=3, checkpoint=None):
    """The backbone of ``config`` (or ``SpatialMamba(arch)``) returning ``stage``."""
    if config is not None:
        kwargs = dict(backbone_cfg(load_config(config)))
        kwargs.pop('type')
    else:
        kwargs = dict(arch=arch or 'tiny')
    kwargs.update(out_indices=(stage, ), init_cfg=None, drop_path_rate=0.)
    kwargs.pop('frozen_stages', None)
    model = SpatialMamba(**kwargs)
    if checkpoint is not None:
        model.load_pretrained(checkpoint)
    return model.eval()


def load_images(pattern, size, num_images, seed=0):
    """``num_images`` normalised inputs (num, 3, size, size): the images of
    ``pattern`` (a folder or a glob) resized, or Gaussian noise if None."""
    if pattern is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(num_images, 3, size, size, generator=generator)
    import cv2
    if osp.isdir(pattern):
        pattern = osp.join(pattern, '*')
    files = sorted(f for f in glob.glob(pattern)
                   if f.lower().endswith(('.jpg', '.jpeg', '.png', '.bmp')))
    if not files:
        raise MissingFileError(f'no images (.jpg/.jpeg/.png/.bmp) match {pattern!r}')
    images = []
    for f in files[:num_images]:
        bgr = cv2.imread(f, cv2.IMREAD_COLOR)
        rgb = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC)[..., ::-1]
        images.append((rgb.astype(np.float32) - MEAN) / STD)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def effective_receptive_field(model, images):
    """Mean |d centre / d input| over ``images``, (H, W) float64 numpy."""
    total = None
    for image in images:
        x = image[None].clone().requires_grad_(True)
        out = model(x)[-1]                              # (1, C, h, w)
        h, w = out.shape[2:]
        centre = F.relu(out[0, :, h // 2, w // 2]).sum()
        if centre.item() == 0:  # all ReLU'd away: use the raw sum instead
            centre = out[0, :, h // 2, w // 2].sum()
        (grad, ) = torch.autograd.grad(centre, x)
        contribution = grad[0].abs().sum(0).double().numpy()
        total = contribution if total is None else total + contribution
    return total / len(images)


def centre_of(size, stage):
    """Input pixel at the centre of the stage's receptive field of the output
    pixel (h // 2, w // 2): output pixel i covers input pixels from i * stride."""
    stride = 4 * 2 ** stage
    out = -(-size // stride)  # ceil, as the stride-2 convolutions round
    return (out // 2) * stride + stride // 2


def asymmetry(erf, cy, cx):
    """Shares of the ERF mass above (vs below) and left (vs right) of
    (cy, cx), within the same distance on both sides, and the side of the
    centred square holding 20/50/90% of the whole mass."""
    # Within equal distances of the centre, so that an off-centre pixel does
    # not count as a bias.
    ry, rx = min(cy, erf.shape[0] - 1 - cy), min(cx, erf.shape[1] - 1 - cx)
    above, below = erf[cy - ry:cy].sum(), erf[cy + 1:cy + 1 + ry].sum()
    left, right = erf[:, cx - rx:cx].sum(), erf[:, cx + 1:cx + 1 + rx].sum()
    total = erf.sum()
    sides = {}
    for share in (0.2, 0.5, 0.9):
        for r in range(max(erf.shape)):
            box = erf[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1]
            if box.sum() >= share * total:
                sides[share] = 2 * r + 1
                break
    return dict(above=above / max(above + below, 1e-30),
                left=left / max(left + right, 1e-30), square_side=sides)


def save_heatmap(erf, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    scaled = np.log10(erf + 1)
    scaled = scaled / max(scaled.max(), 1e-30)
    fig, ax = plt.subplots(figsize=(5, 5))
    im = ax.imshow(scaled, cmap='RdYlGn', vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def parse_args(argv=None):
    parser = tool_parser(description='ERF of a Spatial-Mamba stage')
    parser.add_argument('config', nargs='?', help='config whose backbone to use')
    parser.add_argument('--arch', help='tiny/small/base (or t/s/b) without a config')
    parser.add_argument('--checkpoint', help='weights (any released form)')
    parser.add_argument('--stage', type=int, default=3, choices=range(4),
                        help='stage whose centre output is studied (default 3)')
    parser.add_argument('--images', help='folder or glob of images '
                        '(default: Gaussian noise)')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--size', type=int, default=224,
                        help='input side (default 224; an odd number of output '
                        'pixels, 224 / 32 = 7 at stage 3, has an exact centre)')
    parser.add_argument('--out', default='erf.png', help='PNG to write')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.config is None and args.arch is None:
        args.arch = 'tiny'
    if args.config is not None and args.arch is not None:
        parser.error('give a config or --arch, not both')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_backbone(args.config, args.arch, args.stage, args.checkpoint)
    images = load_images(args.images, args.size, args.num_images, args.seed)
    erf = effective_receptive_field(model, images)
    cy = cx = centre_of(args.size, args.stage)
    stats = asymmetry(erf, cy, cx)
    name = args.config or f'arch {args.arch}'
    weights = 'random init' if args.checkpoint is None else osp.basename(args.checkpoint)
    save_heatmap(erf, args.out, f'ERF, stage {args.stage}, {name}\n{weights}, '
                 f'{len(images)} inputs, {args.size}px')
    print(f'ERF of stage {args.stage} ({name}, {weights}), {len(images)} inputs '
          f'of {args.size}x{args.size}, centre pixel ({cy}, {cx}) -> {args.out}')
    print(f'  mass above : below the centre row    = {stats["above"]:.3f} : '
          f'{1 - stats["above"]:.3f}')
    print(f'  mass left : right of the centre col  = {stats["left"]:.3f} : '
          f'{1 - stats["left"]:.3f}')
    print('  centred square holding ' + ', '.join(
        f'{int(share * 100)}%: {side}px' for share, side in stats['square_side'].items()))
    return erf, stats


if __name__ == '__main__':
    run_tool(main, __file__)
