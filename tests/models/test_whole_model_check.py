"""The whole-model check: a checkpoint must hold every tensor of the task model
with its shape and finite values, and nothing else; a checkpoint of another
task, arch or number of classes is refused with a first line that names the
checkpoint and the problem, unless partial loading is allowed on purpose.

The models here are small stand-ins with the task libraries' module names
(``backbone``, ``decode_head``, ``roi_head``, ``head.fc``); the tools' and
inferencers' tests run the check on the real configs."""
import pytest
import torch
import torch.nn as nn

from mmspatial.errors import InputError
from mmspatial.models import SpatialMamba
from mmspatial.models import whole_model_check as check
from mmspatial.models.whole_model_check import (ALLOW_PARTIAL_LOAD_ENV, check_model_fit,
                                                checkpoint_task, load_model_checkpoint,
                                                model_state_dict_of, model_task)

from .test_spatial_mamba import randomize_

ARCH = dict(dims=8, depths=[1, 1, 1, 1])
SOURCE = "checkpoint 'seg.pth' (for seg.py)"


class Segmentor(nn.Module):
    def __init__(self, num_classes=5, arch=ARCH):
        super().__init__()
        self.backbone = SpatialMamba(arch)
        self.decode_head = nn.Module()
        self.decode_head.conv_seg = nn.Conv2d(8, num_classes, 1)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = SpatialMamba(ARCH)
        self.rpn_head = nn.Conv2d(8, 3, 1)
        self.roi_head = nn.Linear(8, 5)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = SpatialMamba(ARCH, out_indices=(3,))
        self.head = nn.Module()
        self.head.fc = nn.Linear(64, 10)


def saved(model, seed=0):
    """A checkpoint of ``model`` as the Runner saves it, with perturbed weights."""
    return {'state_dict': randomize_(model, seed).state_dict(), 'meta': {}}


def refusal(model, checkpoint):
    with pytest.raises(InputError) as error:
        check_model_fit(model, model_state_dict_of(checkpoint, model), SOURCE, checkpoint)
    [line] = str(error.value).splitlines()  # one line
    assert line.startswith(f'{SOURCE} does not fit the config\'s '), line
    assert line.endswith(' (to load only the tensors that fit: --allow-partial-load or '
                         f'{ALLOW_PARTIAL_LOAD_ENV}=1)')
    return line


def test_tasks_read_off_modules_and_keys():
    assert [model_task(m()) for m in (Segmentor, Detector, Classifier)] == [
        'segmentation', 'detection', 'classification']
    assert checkpoint_task(Detector().state_dict()) == ('detection', ('rpn_head', 'roi_head'))
    assert checkpoint_task(SpatialMamba(ARCH).state_dict())[0] == 'backbone'
    assert checkpoint_task({'backbone.x': 0, 'neck.y': 0}) == (None, ())


def test_exact_checkpoint_loads_strictly():
    checkpoint = saved(Segmentor())
    model = Segmentor()
    load_model_checkpoint(model, checkpoint, SOURCE)
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_head_for_another_number_of_classes():
    line = refusal(Segmentor(num_classes=5), saved(Segmentor(num_classes=150)))
    assert "segmentor (Segmentor): 2 tensors of another shape, checkpoint vs model " \
           "(decode_head.conv_seg.bias (150,) vs (5,), decode_head.conv_seg.weight " \
           "(150, 8, 1, 1) vs (5, 8, 1, 1)): a head for another number of classes?" in line


def test_checkpoint_of_another_task():
    line = refusal(Segmentor(), saved(Detector()))
    assert ('segmentor (Segmentor): it is a detection checkpoint (it holds '
            'rpn_head.*, roi_head.* weights) (to load') in line
    line = refusal(Detector(), saved(Segmentor()))
    assert 'it is a segmentation checkpoint (it holds decode_head.* weights)' in line


def test_bare_backbone_is_not_a_whole_model():
    line = refusal(Segmentor(), SpatialMamba(ARCH).state_dict())
    assert 'it is a bare backbone' in line and "backbone's init_cfg" in line


def test_backbone_of_another_arch():
    other = Segmentor(arch=dict(dims=8, depths=[1, 2, 1, 1]))
    with pytest.raises(InputError) as error:
        load_model_checkpoint(Segmentor(), saved(other), SOURCE)
    message = str(error.value)
    assert 'its backbone does not fit this SpatialMamba arch (dims [8, 16, 32, 64], ' \
           'depths [1, 1, 1, 1]): is it a checkpoint of another arch?' in message
    assert 'has no place for' not in message, 'backbone keys reported twice'


def test_missing_and_unexpected_tensors():
    checkpoint = saved(Segmentor())
    del checkpoint['state_dict']['decode_head.conv_seg.bias']
    checkpoint['state_dict']['decode_head.extra.weight'] = torch.zeros(3)
    line = refusal(Segmentor(), checkpoint)
    assert ('1 tensor of the model missing in the checkpoint (decode_head.* 1; e.g. '
            'decode_head.conv_seg.bias); 1 tensor the model has no place for '
            '(decode_head.* 1; e.g. decode_head.extra.weight)') in line


def test_nonfinite_weights_are_named_and_counted():
    checkpoint = saved(Segmentor())
    state = checkpoint['state_dict']
    state['decode_head.conv_seg.weight'][0, :3] = float('nan')
    state['backbone.outnorm0.bias'][1] = float('inf')
    line = refusal(Segmentor(), checkpoint)
    assert ('2 tensors with NaN or Inf values: backbone.outnorm0.bias (1 of 8), '
            'decode_head.conv_seg.weight (3 of 40)') in line


def test_large_finite_weights_are_not_nonfinite():
    """Their sum overflows to Inf; counted element by element, none is."""
    checkpoint = saved(Segmentor())
    checkpoint['state_dict']['decode_head.conv_seg.weight'].fill_(3e38)
    model = Segmentor()
    assert check_model_fit(model, model_state_dict_of(checkpoint, model), SOURCE)


def test_released_classifier_is_converted_and_checked():
    """The official {'model': ...} form: norm.* is the last stage's output
    norm, head.* the head's fc."""
    source = randomize_(Classifier(), 1)
    official = {}
    for key, value in source.state_dict().items():
        key = key.replace('backbone.outnorm3.', 'norm.').replace('head.fc.', 'head.')
        official[key[len('backbone.'):] if key.startswith('backbone.') else key] = value
    model = Classifier()
    load_model_checkpoint(model, {'model': official}, SOURCE)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    line = refusal(Segmentor(), {'model': official})
    assert "it is a released ImageNet classifier ({'model': ...})" in line


def test_partial_loading_on_purpose(monkeypatch):
    """With the opt-in the problems are one warning, the tensors that fit load
    and the others keep their initialisation."""
    warnings = []
    monkeypatch.setattr(check, 'print_log',
                        lambda message, **kwargs: warnings.append((message, kwargs)))
    monkeypatch.setenv(ALLOW_PARTIAL_LOAD_ENV, '1')
    assert check.partial_load_allowed()
    checkpoint = saved(Segmentor(num_classes=150))
    model = Segmentor(num_classes=5)
    head = model.decode_head.conv_seg.weight.clone()
    load_model_checkpoint(model, checkpoint, SOURCE)
    [(message, kwargs)] = warnings
    assert message.startswith(SOURCE) and 'another number of classes' in message
    assert kwargs['level'] == 30 and ALLOW_PARTIAL_LOAD_ENV in message
    assert torch.equal(model.decode_head.conv_seg.weight, head)
    assert torch.equal(model.backbone.patch_embed.conv1.conv.weight,
                       checkpoint['state_dict']['backbone.patch_embed.conv1.conv.weight'])
    monkeypatch.setenv(ALLOW_PARTIAL_LOAD_ENV, '0')
    assert not check.partial_load_allowed()
    with pytest.raises(InputError):
        load_model_checkpoint(Segmentor(num_classes=5), checkpoint, SOURCE)
