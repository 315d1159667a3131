"""mmseg's stock UperNet config with only the backbone replaced (BN on CPU)."""
import torch
from mmengine.hub import get_config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmspatial  # noqa: F401


def build_upernet(backbone=None, in_channels=(64, 128, 256, 512)):
    """The stock UperNet with Spatial-Mamba-T, or ``backbone`` (a config dict)
    whose stages have ``in_channels``."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')
    cfg = get_config('mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py')
    cfg.model.pretrained = None  # the stock value is a ResNet-50 checkpoint
    cfg.model.backbone = backbone or dict(type='SpatialMamba', arch='tiny',
                                          out_indices=(0, 1, 2, 3))
    cfg.model.decode_head.in_channels = list(in_channels)
    cfg.model.auxiliary_head.in_channels = in_channels[2]
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    cfg.model.data_preprocessor.update(size=None, size_divisor=32)  # small CPU batches
    return MODELS.build(cfg.model)


def packed_batch(batch=2, height=96, width=128, num_classes=150):
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        labels = torch.randint(0, num_classes, (1, height, width), generator=gen)
        sample.gt_sem_seg = PixelData(data=labels)
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def test_upernet_train_step_and_prediction():
    torch.manual_seed(0)
    model = build_upernet()
    model.init_weights()
    packed = packed_batch()
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=6e-5))
    model.train()
    losses = model.train_step(packed, optim)
    assert torch.isfinite(losses['decode.loss_ce']) and torch.isfinite(losses['aux.loss_ce'])
    model.eval()
    with torch.no_grad():
        results = model.test_step(packed_batch(batch=1, height=80, width=112))
    assert results[0].pred_sem_seg.data.shape == (1, 80, 112)
