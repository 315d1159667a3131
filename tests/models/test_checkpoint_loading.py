"""``init_cfg=dict(type='Pretrained', ...)`` with every released form, and the
errors for files that are missing or of another arch."""
import re

import pytest
import torch

from mmspatial.models import SpatialMamba
from mmspatial.models import checkpoint as checkpoint_module
from mmspatial.models.backbones import spatial_mamba as backbone_module
from mmspatial.errors import InputError
from mmspatial.models.checkpoint import (checkpoint_filter_fn, extract_backbone_state_dict,
                                         local_checkpoint_policy, stage_depths)

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


def test_checkpoint_with_pickled_objects_loads_with_a_warning(tmp_path, source):
    """Released files often carry their config; torch >= 2.6 refuses those by default."""
    import argparse
    import logging

    from mmengine.logging import MMLogger
    path = tmp_path / 'with_config.pth'
    torch.save({'model': source.state_dict(), 'config': argparse.Namespace(lr=1)}, path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    assert_same_weights(model, source)
    assert any('weights_only=False' in r.getMessage() and r.levelno == logging.WARNING
               for r in records)


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
    """Inside ``local_checkpoint_policy`` mmengine's loader takes files with
    pickled objects (mmengine's own checkpoints) and names unreadable ones;
    outside it, its own loader is back."""
    import argparse

    from mmengine.runner import CheckpointLoader
    original = CheckpointLoader._schemes['']
    path = tmp_path / 'with_config.pth'
    torch.save({'state_dict': source.state_dict(), 'config': argparse.Namespace(lr=1)}, path)
    with local_checkpoint_policy():
        checkpoint = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
        with pytest.raises(InputError, match='could not be read'):
            CheckpointLoader.load_checkpoint(str(unreadable_checkpoint), map_location='cpu')
    assert checkpoint['config'].lr == 1
    assert CheckpointLoader._schemes[''] is original
