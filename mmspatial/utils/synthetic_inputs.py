"""Synthetic batches for a config's model (tools/analysis: FLOPs, benchmark).

A batch here is what a dataloader would hand to ``model.test_step`` /
``model.train_step``: ``{'inputs': [uint8 (3, H, W), ...], 'data_samples':
[...]}``, with the meta information each library's model reads (and, for a
training step, one ground-truth object / label map / label per image), so the
real data preprocessor, heads and post-processing run.
"""
import torch


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
