"""Models of a config and synthetic batches for them, for get_flops/benchmark.

A batch here is what a dataloader would hand to ``model.test_step`` /
``model.train_step``: ``{'inputs': [uint8 (3, H, W), ...], 'data_samples':
[...]}``, with the meta information each library's model reads (and, for a
training step, one ground-truth object / label map / label per image), so the
real data preprocessor, heads and post-processing run.
"""
import os.path as osp

import torch

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


class ConfigError(Exception):
    """The config cannot be used here; the message says why."""


def load_cfg(path, cfg_options=None):
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ConfigError(f'{path}: default_scope {scope!r} is none of {SCOPES}')
    return cfg


def build_model(cfg, backbone_only=False):
    """The config's model (or its backbone) without pretrained weights, with
    SyncBN turned into BN (there is no process group here)."""
    import mmspatial  # noqa: F401  (registers SpatialMamba)
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    # init_weights() is not called: no checkpoint is read
    if backbone_only:
        model = MODELS.build(cfg.model.backbone)
    else:
        model_cfg = cfg.model.copy()
        if cfg.get('data_preprocessor'):  # as the Runner does
            model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
        model = MODELS.build(model_cfg)
    return revert_sync_batchnorm(model)


def data_samples(scope, batch_size, height, width, with_gt=False):
    """Data samples with the meta information (and optionally ground truth)
    of ``batch_size`` images of ``height`` x ``width``, as the test/train
    pipelines would pack them."""
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), scale_factor=(1.0, 1.0), flip=False)
    samples = []
    for i in range(batch_size):
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            sample = DetDataSample(metainfo=dict(meta, img_id=i))
            if with_gt:
                x0, y0, x1, y1 = width // 4, height // 4, 3 * width // 4, 3 * height // 4
                mask = torch.zeros(1, height, width, dtype=torch.uint8)
                mask[:, y0:y1, x0:x1] = 1
                sample.gt_instances = InstanceData(
                    bboxes=torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                    labels=torch.tensor([0]),
                    masks=BitmapMasks(mask.numpy(), height, width))
        elif scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=dict(meta, padding_size=[0, 0, 0, 0]))
            if with_gt:
                label = torch.zeros(1, height, width, dtype=torch.long)
                label[:, height // 2:] = 1
                sample.gt_sem_seg = PixelData(data=label)
        else:
            from mmpretrain.structures import DataSample
            sample = DataSample(metainfo=meta)
            if with_gt:
                sample.set_gt_label(i % 2)
        samples.append(sample)
    return samples


def synthetic_batch(scope, batch_size, height, width, with_gt=False, seed=0):
    """A dataloader-like batch of random uint8 images."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                            generator=generator) for _ in range(batch_size)]
    return dict(inputs=inputs,
                data_samples=data_samples(scope, batch_size, height, width, with_gt))
