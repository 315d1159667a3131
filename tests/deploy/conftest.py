"""Fixtures of the deployment tests: this project's configs with the small
Spatial-Mamba, and checkpoints of them with fixed, non-trivial weights."""
import os.path as osp

import pytest
import torch

from ..ops.conftest import one_thread  # noqa: F401  (autouse)
from ..tools.helpers import REPO_ROOT, dump, shrink, small_images

CONFIGS = {
    'mmpretrain': 'configs/classification/spatialmamba_t_in1k.py',
    'mmseg': 'configs/segmentation/demo/upernet_spatialmamba_t_synthetic.py',
    'mmdet': 'configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py',
}


def small_config(scope, folder, size=64):
    """A config of ``scope`` with the small backbone and ``size`` px test images,
    written to ``folder``; returns (path, Config)."""
    from mmengine.config import Config
    cfg = small_images(shrink(Config.fromfile(osp.join(REPO_ROOT, CONFIGS[scope]))), size)
    if scope == 'mmseg':
        cfg.model.data_preprocessor.size = (size, size)
    path = dump(cfg, osp.join(folder, f'{scope}_small.py'))
    return path, Config.fromfile(path)


def build_model(cfg, seed=0):
    """``cfg``'s model, initialised, then every tensor perturbed (seeded)."""
    from mmengine.registry import DefaultScope

    from mmspatial.utils import build_model as build_task_model

    from ..models.test_spatial_mamba import randomize_
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = build_task_model(cfg)
    model.init_weights()
    return randomize_(model, seed).eval()


def save_checkpoint(model, path, dataset_meta=None):
    """A checkpoint as mmengine's Runner writes it: ``state_dict``, ``meta``
    (with the dataset's classes) and the pickled message hub."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance(f'checkpoint-{osp.basename(path)}')
    hub.update_scalar('train/loss', 1.0)
    meta = dict(dataset_meta=dataset_meta) if dataset_meta else {}
    torch.save(dict(state_dict=model.state_dict(), meta=meta, message_hub=hub.state_dict()),
               path)
    return str(path)


@pytest.fixture(scope='module')
def small_models(tmp_path_factory):
    """scope -> (config path, Config, model, checkpoint path) for the three tasks."""
    from mmspatial.datasets import SHAPE_CLASSES
    folder = tmp_path_factory.mktemp('small_models')
    models = {}
    for scope in CONFIGS:
        path, cfg = small_config(scope, str(folder))
        model = build_model(cfg)
        meta = None
        if scope != 'mmpretrain':
            meta = dict(cfg.get('metainfo') or dict(classes=SHAPE_CLASSES))
        models[scope] = (path, cfg, model,
                         save_checkpoint(model, folder / f'{scope}.pth', meta))
    return models
