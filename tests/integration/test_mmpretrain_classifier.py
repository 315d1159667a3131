"""An mmpretrain ImageClassifier over SpatialMamba is the reference classifier:
same parameter count, keys in one-to-one correspondence, same logits."""
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import mmspatial  # noqa: F401
from mmspatial.models.checkpoint import official_classifier_to_mmpretrain

from ..models import reference_spatial_mamba as ref
from ..models.test_spatial_mamba import randomize_


def build_classifier(arch='tiny', num_classes=1000):
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmpretrain')
    channels = SMALL_DIMS[-1] if isinstance(arch, dict) else (768 if arch == 'base' else 512)
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SpatialMamba', arch=arch, out_indices=(3,)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=channels,
                  loss=dict(type='CrossEntropyLoss'))))


SMALL_DIMS = [8, 16, 32, 64]
SMALL_ARCH = dict(dims=8, depths=[1, 1, 2, 1])


def test_classifier_params_and_keys_equal_reference(official_keys):
    model = build_classifier('tiny')
    expected = official_keys['tiny']
    assert sum(p.numel() for p in model.parameters()) == expected['classifier_params']
    mapped = official_classifier_to_mmpretrain(
        {k: torch.empty(v) for k, v in expected['classifier_keys'].items()})
    assert {k: list(v.shape) for k, v in mapped.items()} == \
        {k: list(v.shape) for k, v in model.state_dict().items()}


def test_official_classifier_weights_give_reference_logits():
    torch.manual_seed(0)
    model = randomize_(build_classifier(SMALL_ARCH, num_classes=10)).eval()
    # an "official" checkpoint made from these weights, in the reference layout
    official = {}
    for key, value in model.state_dict().items():
        key = key.replace('backbone.outnorm3.', 'norm.').replace('head.fc.', 'head.')
        official[key.replace('backbone.', '', 1)] = value.clone()
    fresh = build_classifier(SMALL_ARCH, num_classes=10).eval()
    fresh.load_state_dict(official_classifier_to_mmpretrain(official))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = fresh(x, mode='tensor')
        features = ref.stem(x, official)
        for i, depth in enumerate(SMALL_ARCH['depths']):
            if i > 0:
                features = ref.downsample(features, official, f'layers.{i - 1}.downsample')
            for j in range(depth):
                features = ref.block(features, official, f'layers.{i}.blocks.{j}')
        features = ref.layer_norm_channels(features, official, 'norm').mean(dim=(2, 3))
        expected = F.linear(features, official['head.weight'], official['head.bias'])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_classifier_train_step():
    from mmpretrain.structures import DataSample
    model = build_classifier(SMALL_ARCH, num_classes=10)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    inputs = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(label) for label in (1, 7)]
    losses = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    assert torch.isfinite(losses['loss'])
