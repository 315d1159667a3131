"""Every argument of the backbone is checked when it is built, and its input at
every forward: a bad value is one ``InputError`` that names the argument and
the value, before anything is computed with it."""
import math
from pathlib import Path

import pytest
import torch

from mmspatial.errors import InputError
from mmspatial.models import SpatialMamba

from .test_spatial_mamba import randomize_

ARCH = dict(dims=8, depths=[1, 1, 1, 1])


def backbone(**kwargs):
    kwargs.setdefault('arch', ARCH)
    return SpatialMamba(**kwargs)


# ------------------------------------------------------------- construction

@pytest.mark.parametrize('rate', [1.0, 1.5, -0.1, math.nan, math.inf, '0.1', True])
def test_drop_path_rate_outside_0_1_is_refused(rate):
    """1.0 drops every residual branch: NaN loss from the first iteration."""
    with pytest.raises(InputError, match=r'drop_path_rate must be in \[0, 1\), got '
                       + repr(rate).replace('(', r'\(').replace(')', r'\)')):
        backbone(drop_path_rate=rate)


@pytest.mark.parametrize('rate', [0, 0.0, 0.5, 0.99])
def test_drop_path_rate_in_0_1_is_accepted(rate):
    model = backbone(drop_path_rate=rate).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert all(torch.isfinite(o).all() for o in out)


@pytest.mark.parametrize('arch,match', [
    (dict(dims=0, depths=[1, 1, 1, 1]), r'dims must be integers >= 1, got dims=\[0, 0, 0, 0\]'),
    (dict(dims=[8, 16, -32, 64], depths=[1, 1, 1, 1]), r'dims=\[8, 16, -32, 64\]'),
    (dict(dims=8.0, depths=[1, 1, 1, 1]), r'dims and depths need 4 entries, got dims=8.0'),
    (dict(dims=8, depths=[1, 0, 1, 1]), r'depths must be integers >= 1, got depths=\[1, 0, 1, 1\]'),
    (dict(dims=8, depths=[1, 1.5, 1, 1]), r'depths=\[1, 1.5, 1, 1\]'),
    (dict(dims=8, depths=[1, 1, 1]), r'need 4 entries'),
    (dict(dims=[8, 16], depths=[1, 1, 1, 1]), r'need 4 entries, got dims=\[8, 16\]'),
    (dict(dims=8, depths=[1, 1, 1, 1], d_state=0), r'd_state must be an integer >= 1, got d_state=0'),
    (dict(dims=8, depths=[1, 1, 1, 1], d_state=1.5), r'got d_state=1.5'),
    (3, r'arch must be a str or dict, got int 3'),
])
def test_bad_arch_dict_is_refused(arch, match):
    with pytest.raises(InputError, match=match):
        SpatialMamba(arch=arch)


@pytest.mark.parametrize('out_indices,match', [
    ((), r'out_indices must name at least one of the 4 stages.*got \(\)'),
    ([], r'got \[\]'),
    ((0, 4), 'entry 4 is out of range'),
    ((-5,), 'entry -5 is out of range'),
    (('1',), "entry '1' is out of range"),
    (None, 'got None'),
])
def test_bad_out_indices_are_refused(out_indices, match):
    with pytest.raises(InputError, match=match):
        backbone(out_indices=out_indices)


def test_negative_out_indices_count_from_the_end():
    """mmpretrain's convention (its ConvNeXt, Swin): -1 is the last stage."""
    assert backbone(out_indices=(-4, -1)).out_indices == (0, 3)
    assert backbone(out_indices=-2).out_indices == (2,)


@pytest.mark.parametrize('in_channels', [0, -3, 2.5, '3', None])
def test_bad_in_channels_are_refused(in_channels):
    with pytest.raises(InputError, match=f'in_channels must be an integer >= 1, got '
                       f'{in_channels!r}'.replace('.', r'\.')):
        backbone(in_channels=in_channels)


def test_one_input_channel_is_accepted():
    outs = backbone(in_channels=1).eval()(torch.randn(1, 1, 32, 32))
    assert outs[0].shape == (1, 8, 8, 8)


@pytest.mark.parametrize('frozen_stages', [-2, 5, 1.0])
def test_bad_frozen_stages_are_refused(frozen_stages):
    with pytest.raises(InputError, match=f'frozen_stages must be in \\[-1, 4\\], got '
                       f'{frozen_stages!r}'):
        backbone(frozen_stages=frozen_stages)


@pytest.mark.parametrize('init_cfg', [dict(type='Pretrained'),
                                      dict(type='Pretrained', checkpoint=None),
                                      dict(type='Pretrained', checkpoint='')])
def test_pretrained_without_a_checkpoint_is_refused(init_cfg):
    with pytest.raises(InputError, match='Pretrained needs a checkpoint'):
        backbone(init_cfg=init_cfg)


def test_directory_as_checkpoint_is_refused(tmp_path):
    for path in (str(tmp_path), tmp_path):
        with pytest.raises(InputError, match=f"checkpoint '{tmp_path}' is a directory"):
            backbone(init_cfg=dict(type='Pretrained', checkpoint=path))
        with pytest.raises(InputError, match='is a directory'):
            backbone(pretrained=path)


def test_pathlib_checkpoints_load_like_strings(tmp_path):
    source = randomize_(backbone(), seed=3)
    path = tmp_path / 'backbone.pth'
    torch.save(source.state_dict(), path)
    for model in (backbone(init_cfg=dict(type='Pretrained', checkpoint=Path(path))),
                  backbone(pretrained=Path(path))):
        assert model.init_cfg['checkpoint'] == str(path)
        model.init_weights()
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    model = backbone()
    model.load_pretrained(Path(path))
    assert torch.equal(model.layers[0].blocks[0].cpe1.weight,
                       source.layers[0].blocks[0].cpe1.weight)


# ----------------------------------------------------------------- forward

def test_uint8_images_are_refused():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(InputError, match='got torch.uint8 images: convert them to float '
                       'and normalise them'):
        backbone().eval()(images)


def test_weight_and_input_dtypes_must_agree_outside_autocast():
    model = backbone().eval()
    with pytest.raises(InputError, match="weights are torch.float32, its input is "
                       "torch.bfloat16"):
        model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))
    with pytest.raises(InputError, match="weights are torch.bfloat16, its input is "
                       "torch.float32"):
        model.bfloat16()(torch.randn(1, 3, 32, 32))


def test_autocast_stays_allowed():
    """Under bfloat16 autocast on the CPU, float32 weights take float32 or
    bfloat16 images; the outputs are those of float32, to bfloat16's precision."""
    torch.manual_seed(0)
    model = backbone().eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            for inputs in (images, images.bfloat16()):
                outs = model(inputs)
                for out, ref in zip(outs, expected):
                    assert torch.isfinite(out).all()
                    error = (out.float() - ref).norm() / ref.norm()
                    assert error < 0.05, f'relative error {error:.2e}'
