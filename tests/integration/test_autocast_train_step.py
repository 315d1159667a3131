"""Mixed precision on the CPU: Mask R-CNN's and UperNet's training step under
``torch.autocast('cpu', dtype=torch.bfloat16)``.

mmengine's ``AmpOptimWrapper`` needs a GPU, so the step is taken by hand, as
the wrapper would: preprocess, forward under autocast, backward outside it.
The loss is finite and close to the float32 step's (same weights, same random
draws), and every backbone parameter gets a finite, non-zero gradient.
A small backbone (one block per stage) keeps each step to seconds.

UperNet runs whole under autocast. Mask R-CNN runs its backbone and FPN under
autocast and its heads in float32: mmcv's CPU NMS (in the RPN) takes float32
boxes only and raises "expected scalar type Float but found BFloat16".
"""
import contextlib

import pytest
import torch

from .test_mmdet_maskrcnn import build_maskrcnn
from .test_mmseg_upernet import build_upernet, packed_batch

SMALL = dict(type='SpatialMamba', arch=dict(dims=16, depths=[1, 1, 1, 1]),
             out_indices=(0, 1, 2, 3), drop_path_rate=0.0)  # every block in every step
DIMS = [16, 32, 64, 128]
# The bfloat16 loss against the float32 one, relative: measured at most 3.4e-3
# (Mask R-CNN, whose proposals and hence sampled RoIs shift with the rounding)
# and 1e-5 (UperNet) with three seeds; the limit leaves 6x.
LOSS_RTOL = 0.02


def bfloat16_autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16)


def small_maskrcnn():
    from mmdet.testing import demo_mm_inputs
    model = build_maskrcnn(backbone=SMALL, in_channels=DIMS)
    extract_feat = model.extract_feat

    def extract_feat_in_bfloat16(inputs):  # backbone + FPN; float32 to the heads
        with bfloat16_autocast():
            return tuple(level.float() for level in extract_feat(inputs))

    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 128)] * 2, num_items=[3, 2],
                            num_classes=80, with_mask=True)
    return model, packed, extract_feat_in_bfloat16


def small_upernet():
    model = build_upernet(backbone=SMALL, in_channels=DIMS)
    return model, packed_batch(batch=2, height=64, width=96), None


def train_step(model, packed, autocast_features=None):
    """Loss and backbone gradients of one step: float32; with bfloat16 autocast
    around the whole forward (``autocast_features == 'model'``); or with
    ``model.extract_feat`` replaced by ``autocast_features``."""
    model.train()
    model.zero_grad()
    data = model.data_preprocessor(packed, True)
    torch.manual_seed(1)  # RoI sampling draws from torch's generator: same draws
    if callable(autocast_features):
        model.extract_feat = autocast_features
    whole = bfloat16_autocast() if autocast_features == 'model' else contextlib.nullcontext()
    try:
        with whole:
            losses = model(**data, mode='loss')
    finally:
        model.__dict__.pop('extract_feat', None)
    loss, _ = model.parse_losses(losses)
    loss.backward()
    grads = {name: None if p.grad is None else p.grad.clone()
             for name, p in model.backbone.named_parameters()}
    return loss.detach(), grads


@pytest.mark.parametrize('build', [small_maskrcnn, small_upernet],
                         ids=['maskrcnn', 'upernet'])
def test_bfloat16_autocast_train_step(build):
    torch.manual_seed(0)
    model, packed, autocast_features = build()
    model.init_weights()
    loss32, _ = train_step(model, packed)
    loss16, grads = train_step(model, packed, autocast_features or 'model')
    assert loss16.dtype == torch.float32  # the losses are reduced in float32
    assert torch.isfinite(loss16)
    assert loss16.item() == pytest.approx(loss32.item(), rel=LOSS_RTOL)
    with bfloat16_autocast():  # the backbone does compute in bfloat16
        assert model.backbone(torch.randn(1, 3, 64, 64))[0].dtype == torch.bfloat16
    missing = [name for name, grad in grads.items() if grad is None]
    assert not missing, f'no gradient reaches {missing}'
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f'{name}: non-finite gradient'
        assert grad.abs().sum() > 0, f'{name}: zero gradient'
