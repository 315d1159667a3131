"""mmdet's stock Mask R-CNN R-50 FPN config with only the backbone replaced."""
import torch
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

import mmspatial  # noqa: F401


def build_maskrcnn(backbone=None, in_channels=(64, 128, 256, 512)):
    """The stock Mask R-CNN with Spatial-Mamba-T, or ``backbone`` (a config
    dict) whose stages have ``in_channels``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdet')
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone = backbone or dict(type='SpatialMamba', arch='tiny',
                                          out_indices=(0, 1, 2, 3))
    cfg.model.neck.in_channels = list(in_channels)
    return MODELS.build(cfg.model)


def test_maskrcnn_train_step_and_prediction():
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    model = build_maskrcnn()
    model.init_weights()
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 128, 160)], num_items=[3],
                            num_classes=80, with_mask=True)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    model.train()
    before = model.backbone.layers[0].blocks[0].self_attention.x_proj_weight.clone()
    losses = model.train_step(packed, optim)
    for name in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert torch.isfinite(losses[name]).all(), name
    after = model.backbone.layers[0].blocks[0].self_attention.x_proj_weight
    assert not torch.equal(before, after)  # the backbone was trained

    model.eval()
    with torch.no_grad():
        results = model.test_step(packed)
    assert len(results) == 1
    pred = results[0].pred_instances
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(pred.keys())
