"""``init_cfg=dict(type='Pretrained', ...)`` with every released form, and the
errors for files that are missing, of another arch, or that would run code."""
import re

import pytest
import torch

from mmspatial.models import SpatialMamba
from mmspatial.models import checkpoint as checkpoint_module
from mmspatial.models.backbones import spatial_mamba as backbone_module
from mmspatial.errors import InputError
from mmspatial.fileio.checkpoint_reader import TRUST_ENV
from mmspatial.fileio.safetensors_checkpoint import save_safetensors
from mmspatial.models.checkpoint import (checkpoint_filter_fn, extract_backbone_state_dict,
                                         local_checkpoint_policy, stage_depths)

from ..conftest import warnings_in
from ..fileio.checkpoint_files import hostile, save_released_classifier
from .test_spatial_mamba import randomize_

ARCH = dict(dims=8, depths=[1, 2, 1, 1])


@pytest.fixture
def messages(monkeypatch):
    """Everything the backbone and the checkpoint module log while loading."""
    logged = []
    for module in (backbone_module, checkpoint_module):
        monkeypatch.setattr(module, 'print_log',
                            lambda msg, logger=None, level=None: logged.append(msg))
    return logged


@pytest.fixture
def source():
    torch.manual_seed(0)
    return randomize_(SpatialMamba(arch=ARCH))


def official_classifier(source):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('outnorm')}
    state['norm.weight'] = torch.randn(64)
    state['norm.bias'] = torch.randn(64)
    state['head.weight'] = torch.randn(1000, 64)
    state['head.bias'] = torch.randn(1000)
    return {'model': state}


def assert_same_weights(model, source, skip=('outnorm',)):
    target = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith(skip):
            torch.testing.assert_close(target[key], value, msg=key)


def load(tmp_path, checkpoint, **kwargs):
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    model = SpatialMamba(arch=kwargs.pop('arch', ARCH),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model


def test_official_classifier_checkpoint(tmp_path, source, messages):
    model = load(tmp_path, official_classifier(source))
    assert_same_weights(model, source)
    text = '\n'.join(messages)
    assert 'classifier (official' in text
    assert 'head.weight' in text                       # dropped, and said so
    assert 'newly initialised output norms' in text and 'outnorm3.weight' in text
    assert torch.equal(model.outnorm0.weight, torch.ones(8))


def test_mmdet_checkpoint(tmp_path, source, messages):
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 8, 1, 1)
    model = load(tmp_path, {'state_dict': state, 'meta': {}})
    assert_same_weights(model, source, skip=())
    text = '\n'.join(messages)
    assert 'OpenMMLab' in text and 'neck.lateral_convs.0.conv.weight' in text
    assert 'missing' not in text and 'unexpected' not in text


def test_plain_state_dict_with_missing_and_unexpected_keys(tmp_path, source, messages):
    state = dict(source.state_dict())
    del state['layers.1.blocks.1.self_attention.Ds']
    state['layers.0.blocks.0.extra'] = torch.zeros(1)
    model = load(tmp_path, state)
    text = '\n'.join(messages)
    assert 'missing keys' in text and 'layers.1.blocks.1.self_attention.Ds' in text
    assert 'unexpected keys' in text and 'layers.0.blocks.0.extra' in text
    torch.testing.assert_close(model.layers[0].blocks[0].ln_1.weight,
                               source.layers[0].blocks[0].ln_1.weight)


def test_missing_file_is_an_error(tmp_path):
    model = SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained',
                                                  checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()


def test_checkpoint_of_wider_arch_is_an_error(tmp_path):
    wider = SpatialMamba(arch=dict(dims=16, depths=[1, 2, 1, 1]))
    with pytest.raises(ValueError, match='does not fit this SpatialMamba arch'):
        load(tmp_path, {'state_dict': {f'backbone.{k}': v
                                       for k, v in wider.state_dict().items()}})


def test_checkpoint_of_deeper_arch_is_an_error(tmp_path):
    deeper = SpatialMamba(arch=dict(dims=8, depths=[1, 2, 3, 1]))
    with pytest.raises(ValueError, match=r'\[1, 2, 3, 1\] blocks per stage'):
        load(tmp_path, deeper.state_dict())


def test_checkpoint_of_another_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match='holds no SpatialMamba backbone weights'):
        load(tmp_path, {'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}})


def test_pretrained_argument_is_an_alias(tmp_path, source, messages):
    path = tmp_path / 'ckpt.pth'
    torch.save(source.state_dict(), path)
    model = SpatialMamba(arch=ARCH, pretrained=str(path))
    model.init_weights()
    assert_same_weights(model, source, skip=())
    assert any('deprecated' in m for m in messages)


def test_extract_strips_ddp_prefix(source):
    state = {f'module.{k}': v for k, v in source.state_dict().items()}
    backbone, _, dropped = extract_backbone_state_dict(state)
    assert set(backbone) == set(source.state_dict()) and not dropped
    assert stage_depths(backbone) == [1, 2, 1, 1]


def pretrained(path):
    return SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))


def test_checkpoint_with_other_objects_is_refused_unless_trusted(tmp_path, source, logged,
                                                                 monkeypatch):
    """A config pickled as an object the policy does not list is refused,
    naming it; the opt-in reads it, with a warning."""
    import argparse
    monkeypatch.delenv(TRUST_ENV, raising=False)
    path = tmp_path / 'with_config.pth'
    torch.save({'model': source.state_dict(), 'config': argparse.Namespace(lr=1)}, path)
    with pytest.raises(InputError, match=r'refused: it names argparse\.Namespace'):
        pretrained(path).init_weights()
    assert not warnings_in(logged)
    monkeypatch.setenv(TRUST_ENV, '1')
    model = pretrained(path)
    model.init_weights()
    assert_same_weights(model, source)
    assert any(str(path) in m and 'full pickle' in m for m in warnings_in(logged))


def test_hostile_checkpoint_runs_nothing_on_any_path(tmp_path, source, monkeypatch):
    """init_cfg, and mmengine's loaders inside the policy (load_from, resume)."""
    from mmengine.runner import CheckpointLoader, load_checkpoint
    monkeypatch.delenv(TRUST_ENV, raising=False)
    path, marker = tmp_path / 'hostile.pth', tmp_path / 'ran'
    torch.save(hostile(source.state_dict(), marker), path)
    refused = re.escape(f"checkpoint '{path}' refused: it names ") + '.*pathlib.Path'
    with pytest.raises(InputError, match=refused):
        pretrained(path).init_weights()
    with local_checkpoint_policy():
        with pytest.raises(InputError, match=refused):
            CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
        with pytest.raises(InputError, match=refused):
            load_checkpoint(SpatialMamba(arch=ARCH), str(path), map_location='cpu')
    assert not marker.exists()


def test_released_classifier_with_yacs_config_loads_without_warning(tmp_path, source,
                                                                   logged):
    """The reference trainer's file, its config a yacs CfgNode (yacs is not
    installed): the backbone loads, nothing is said about the config."""
    path = tmp_path / 'spatialmamba_t.pth'
    save_released_classifier(official_classifier(source)['model'], path, tmp_path)
    model = pretrained(path)
    model.init_weights()
    assert_same_weights(model, source)
    assert not warnings_in(logged)


def test_safetensors_checkpoint_through_init_cfg(tmp_path, source, logged):
    path = tmp_path / 'backbone.safetensors'
    save_safetensors({'state_dict': {f'backbone.{k}': v
                                     for k, v in source.state_dict().items()}}, path)
    model = pretrained(path)
    model.init_weights()
    assert_same_weights(model, source, skip=())
    assert not warnings_in(logged)


def test_unreadable_file_is_one_clear_error(unreadable_checkpoint, messages):
    """No warning about pickled objects, no raw torch error: the file is named
    and said to be unreadable."""
    path = str(unreadable_checkpoint)
    model = SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(InputError, match=re.escape(f"checkpoint '{path}' could not be read")):
        model.init_weights()
    assert not any('pickled objects' in m for m in messages)


def test_file_without_a_dict_is_an_error(tmp_path):
    path = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(3), path)
    model = SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(InputError, match='is not a checkpoint.*holds a Tensor'):
        model.init_weights()


def test_checkpoint_filter_fn_returns_the_backbone_of_any_form(source):
    classifier = official_classifier(source)
    state = checkpoint_filter_fn(classifier, source)
    assert set(state) == {k for k in source.state_dict() if not k.startswith('outnorm')}
    mmdet = {'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}}
    assert set(checkpoint_filter_fn(mmdet, source)) == set(source.state_dict())
    wider = SpatialMamba(arch=dict(dims=16, depths=[1, 2, 1, 1]))
    with pytest.raises(InputError, match='does not fit this SpatialMamba arch'):
        checkpoint_filter_fn(classifier, wider)


def test_mmengine_reads_local_files_with_the_same_policy(tmp_path, source,
                                                        unreadable_checkpoint):
    """Inside ``local_checkpoint_policy`` mmengine's loader takes what mmengine
    saves (message hub, numpy values) and names unreadable files; outside it,
    its own loader is back."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import CheckpointLoader
    original = CheckpointLoader._schemes['']
    path = tmp_path / 'runner_like.pth'
    loss = HistoryBuffer()
    loss.update(np.float64(1.5))
    torch.save({'state_dict': source.state_dict(),
                'message_hub': {'log_scalars': {'loss': loss}},
                'meta': {'seed': np.int64(0)}}, path)
    with local_checkpoint_policy():
        checkpoint = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
        with pytest.raises(InputError, match='could not be read'):
            CheckpointLoader.load_checkpoint(str(unreadable_checkpoint), map_location='cpu')
    assert checkpoint['message_hub']['log_scalars']['loss'].mean() == 1.5
    assert CheckpointLoader._schemes[''] is original
