"""Convert a released Spatial-Mamba checkpoint for the OpenMMLab configs.

    python tools/convert_checkpoint.py SRC DST --to backbone   [--arch t]
    python tools/convert_checkpoint.py SRC DST --to mmpretrain [--arch t]

SRC is any released form: an ImageNet classifier (``{'model': ...}``), an
mmdet/mmseg checkpoint (``{'state_dict': {'backbone.*': ...}}``) or a plain
backbone state dict.

- ``--to backbone`` writes ``{'state_dict': {'backbone.<key>': ...}}``: the
  backbone alone, usable as ``load_from`` of an mmdet/mmseg config or as
  ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=DST)``. (The
  configs also load the released files as they are; converting once saves
  the classifier head and a smaller file.)
- ``--to mmpretrain`` writes the ``ImageClassifier`` state dict of the
  configs/classification configs (needs a classifier: it has the head).

The arch is read from the tensors (printed); ``--arch`` makes it a check, and
every key and shape is checked against a freshly built ``SpatialMamba``.

A DST ending in ``.safetensors`` is written in that format (tensors only,
``meta`` as JSON in its header), anything else with ``torch.save``; either
is written atomically. SRC is read by the package's checkpoint policy (no code
from it runs; ``--trust-checkpoint`` opts in, see docs/checkpoints.md).
"""
import os
import os.path as osp

from mmspatial.errors import InputError
from mmspatial.fileio import atomic_torch_save
from mmspatial.fileio.safetensors_checkpoint import is_safetensors, save_safetensors
from mmspatial.utils import run_tool, tool_parser
from mmspatial.models import SpatialMamba
from mmspatial.models.checkpoint import (checkpoint_filter_fn, detect_arch,
                                         extract_backbone_state_dict,
                                         is_official_classifier,
                                         load_checkpoint_file,
                                         official_classifier_to_mmpretrain)


def arch_name(arch):
    """The name of ``SpatialMamba.arch_settings`` with these dims and depths."""
    for name, settings in SpatialMamba.arch_settings.items():
        dims = [settings['dims'] * 2 ** i for i in range(4)]
        if arch == dict(dims=dims, depths=settings['depths']):
            return name
    return None


def backbone_for(checkpoint, arch, out_indices, src):
    """The backbone tensors of ``checkpoint`` for ``SpatialMamba(arch)``: every
    one of its tensors, of its shape, and every model tensor but the output
    norms (which a classifier does not have)."""
    model = SpatialMamba(arch, out_indices=out_indices)
    state_dict = checkpoint_filter_fn(checkpoint, model, f'checkpoint {src!r}')
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.startswith('outnorm')]
    if missing or unexpected:
        raise InputError(f'{src} does not fit SpatialMamba(arch={arch!r}): '
                         f'missing {missing[:4]}{"..." if len(missing) > 4 else ""}, '
                         f'unexpected {unexpected[:4]}'
                         f'{"..." if len(unexpected) > 4 else ""}')
    return state_dict


def convert(src, to, arch=None):
    """The converted checkpoint dict and a one-line description."""
    checkpoint = load_checkpoint_file(src)
    backbone_state, form, _ = extract_backbone_state_dict(checkpoint)
    detected = detect_arch(backbone_state)
    name = arch_name(detected)
    if arch is not None:
        wanted = SpatialMamba(arch, out_indices=(3, ))
        if dict(dims=wanted.dims, depths=wanted.depths) != detected:
            raise InputError(
                f'--arch {arch} asked for dims {wanted.dims}, depths '
                f'{wanted.depths}; {src} holds dims {detected["dims"]}, depths '
                f'{detected["depths"]} ({name or "a custom arch"})')
    described = f'{src}: {form}, arch {name or detected}'

    if to == 'backbone':
        backbone_state = backbone_for(checkpoint, detected, (0, 1, 2, 3), src)
        state_dict = {'backbone.' + k: v for k, v in backbone_state.items()}
    elif to == 'mmpretrain':
        if not is_official_classifier(checkpoint):
            raise InputError(f'--to mmpretrain needs an ImageNet classifier '
                             f'checkpoint ({{"model": ...}} with the head); '
                             f'{src} is {form} without one')
        backbone_for(checkpoint, detected, (3, ), src)
        state_dict = official_classifier_to_mmpretrain(checkpoint['model'], last_stage=3)
    else:
        raise ValueError(f'unknown target {to!r}')
    meta = dict(converted_from=osp.basename(src), source_form=form, target=to,
                arch=name or detected)
    return dict(state_dict=state_dict, meta=meta), described


def parse_args(argv=None):
    parser = tool_parser(
        description='Convert a released Spatial-Mamba checkpoint')
    parser.add_argument('src', help='released checkpoint (classifier, '
                        'mmdet/mmseg or plain backbone)')
    parser.add_argument('dst', help='output file (.safetensors: that format, '
                        'else torch.save\'s)')
    parser.add_argument('--to', choices=('backbone', 'mmpretrain'), required=True,
                        help='backbone: for mmdet/mmseg; mmpretrain: the '
                        'ImageClassifier of configs/classification')
    parser.add_argument('--arch', help='expected arch (tiny/small/base or t/s/b)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    converted, described = convert(args.src, args.to, args.arch)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    if is_safetensors(args.dst):
        save_safetensors(converted, args.dst)
    else:
        atomic_torch_save(converted, args.dst)
    print(f'{described}\n-> {args.dst}: {len(converted["state_dict"])} tensors '
          f'({args.to})')
    return converted


if __name__ == '__main__':
    run_tool(main, __file__)
