"""The backbone in other stock mmdet and mmseg configs, as a user would drop it
in: the backbone swapped and the neck's (or head's) input widths set, nothing
else changed. Each case builds the whole model and runs a 64x64 image through
the backbone and the neck or decode head.

Slow-ish: each case builds a whole stock detector or segmentor.
"""
import math

import pytest
import torch
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

import mmspatial  # noqa: F401

SMALL_ARCH = dict(dims=16, depths=[1, 1, 1, 1])
WIDTHS = [16, 32, 64, 128]  # the stage widths of SMALL_ARCH
SIZE = 64


def build_with_spatial_mamba(config, widths_of):
    """The stock config's model with Spatial-Mamba as its backbone; ``widths_of``
    names the part that takes the four stages (``neck`` or ``decode_head``)."""
    init_default_scope(config.split('::')[0])
    cfg = get_config(config)
    stock_widths = cfg.model[widths_of].in_channels
    assert len(stock_widths) == 4, stock_widths  # the four stages of the stock backbone
    cfg.model.backbone = dict(type='SpatialMamba', arch=SMALL_ARCH, out_indices=(0, 1, 2, 3))
    cfg.model[widths_of].in_channels = WIDTHS
    if 'pretrained' in cfg.model:
        cfg.model.pretrained = None  # a checkpoint of the stock backbone
    return revert_sync_batchnorm(MODELS.build(cfg.model)).eval()


def check_fpn(model, features):
    """mmdet's extract_feat ran the FPN: its levels, widths and strides."""
    neck = model.neck
    assert len(features) == neck.num_outs
    first_stride = 4 * 2 ** neck.start_level
    for level, feature in enumerate(features):
        side = math.ceil(SIZE / (first_stride * 2 ** level))
        assert feature.shape == (1, neck.out_channels, side, side), (level, feature.shape)
        assert torch.isfinite(feature).all()


def check_segformer(model, features):
    logits = model.decode_head(features)
    assert logits.shape == (1, model.decode_head.num_classes, SIZE // 4, SIZE // 4)
    assert torch.isfinite(logits).all()


def check_mask2former(model, features):
    from mmseg.structures import SegDataSample
    head = model.decode_head
    meta = dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                batch_input_shape=(SIZE, SIZE))
    class_scores, mask_logits = head(features, [SegDataSample(metainfo=meta)])
    # one prediction per transformer decoder layer, plus the one before them
    assert len(class_scores) == len(mask_logits) == head.num_transformer_decoder_layers + 1
    assert class_scores[-1].shape == (1, head.num_queries, head.num_classes + 1)
    assert mask_logits[-1].shape == (1, head.num_queries, SIZE // 4, SIZE // 4)
    assert torch.isfinite(mask_logits[-1]).all()


# name: (stock config, the part that takes the four stages, check of its output)
CASES = {
    'retinanet': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'neck', check_fpn),
    'cascade_mask_rcnn': ('mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
                          'neck', check_fpn),
    'fcos': ('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', 'neck', check_fpn),
    'mask2former': ('mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
                    'decode_head', check_mask2former),
    'segformer': ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
                  'decode_head', check_segformer),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_backbone_drops_into_stock_config(name):
    """Slow-ish (a few seconds per case): builds the whole stock model."""
    config, widths_of, check = CASES[name]
    torch.manual_seed(0)
    model = build_with_spatial_mamba(config, widths_of)
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        check(model, model.extract_feat(images))  # mmdet: backbone + neck; mmseg: backbone
