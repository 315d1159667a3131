"""Helpers of the configs' and tools' tests: configs pointed at tiny data and
shrunk for a CPU; the shipped configs as resolved dicts."""
import glob
import json
import os.path as osp

from mmspatial.datasets import SHAPE_CLASSES

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO_ROOT, 'tools')
SIZE = 64  # side of the synthetic images
# A Spatial-Mamba small enough for forward/backward passes on a CPU in tests
# whose point is not the size; the output channels double per stage.
SMALL_ARCH = dict(dims=16, depths=[1, 1, 1, 1])
SMALL_DIMS = [16, 32, 64, 128]
RESOLVED_CONFIGS = osp.join(REPO_ROOT, 'tests', 'data', 'resolved_configs.json')


def use_data(cfg, data):
    """Point every dataloader (and evaluator) of ``cfg`` at the tiny sets,
    without workers; pipelines stay as configured."""
    scope = cfg.default_scope
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        split = 'train' if loader == 'train_dataloader' else 'val'
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        dataset = cfg[loader].dataset
        if scope == 'mmdet':
            dataset.data_root = str(data / 'coco') + '/'
            dataset.ann_file = f'annotations/instances_{split}.json'
            dataset.data_prefix = dict(img=f'{split}/')
            dataset.metainfo = dict(classes=SHAPE_CLASSES)
        elif scope == 'mmseg':
            dataset.data_root = str(data / 'seg')
            dataset.data_prefix = dict(img_path=f'img_dir/{split}',
                                       seg_map_path=f'ann_dir/{split}')
        else:
            dataset.data_root = str(data / 'imagenet')
    if scope == 'mmdet':
        for evaluator in ('val_evaluator', 'test_evaluator'):
            cfg[evaluator].ann_file = str(data / 'coco' / 'annotations' /
                                          'instances_val.json')
    return cfg


def shrink(cfg):
    """Give ``cfg`` the small Spatial-Mamba (and heads to match) and no
    pretrained checkpoint."""
    model = cfg.model
    model.backbone.arch = dict(SMALL_ARCH)
    model.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        model.neck.in_channels = SMALL_DIMS
    elif cfg.default_scope == 'mmseg':
        model.decode_head.in_channels = SMALL_DIMS
        model.auxiliary_head.in_channels = SMALL_DIMS[model.auxiliary_head.in_index]
    else:
        model.head.in_channels = SMALL_DIMS[-1]
    return cfg


def small_images(cfg, size=SIZE):
    """Resize steps of the test pipelines to ``size`` (no upscaling to 1333)."""
    pipelines = [cfg[loader].dataset.pipeline
                 for loader in ('val_dataloader', 'test_dataloader')]
    for pipeline in pipelines:
        for transform in pipeline:
            if transform['type'] == 'Resize' and 'scale' in transform:
                transform['scale'] = (size, size)
            elif transform['type'] == 'ResizeEdge':
                transform['scale'] = size
            elif transform['type'] == 'CenterCrop':
                transform['crop_size'] = size
    return cfg


def small_train_images(cfg, size=SIZE):
    """Training pipelines (and mmseg's batch padding) at ``size``."""
    for transform in cfg.train_dataloader.dataset.pipeline:
        if transform['type'] == 'Resize':
            transform['scale'] = (size, size)
        elif transform['type'] == 'RandomResize':
            transform['scale'] = (2 * size, size)
        elif transform['type'] == 'RandomCrop' and 'crop_size' in transform:
            transform['crop_size'] = (size, size)
    if cfg.model.get('data_preprocessor', {}).get('size'):
        cfg.model.data_preprocessor.size = (size, size)
    return cfg


def dump(cfg, path):
    """Write ``cfg`` as a standalone config file (what the tools take)."""
    cfg.dump(str(path))
    return str(path)


def shipped_configs(root=REPO_ROOT):
    """Paths of the shipped configs (demo ones included), relative to ``root``."""
    paths = glob.glob(osp.join(root, 'configs', '[!_]*', '**', '*.py'), recursive=True)
    return sorted(osp.relpath(path, root) for path in paths)


# The SpatialMamba arguments whose defaults the configs rely on instead of
# restating them: the records hold them as the backbone takes them, so a
# default a config leaves out is still guarded.
BACKBONE_DEFAULTS = ('out_indices', 'drop_path_rate', 'with_cp')


def backbone_arguments(backbone):
    """A ``SpatialMamba`` config dict with BACKBONE_DEFAULTS filled in as the
    backbone takes them: the signature's defaults, ``drop_path_rate`` from the
    arch's settings."""
    import inspect

    from mmspatial.models import SpatialMamba
    parameters = inspect.signature(SpatialMamba.__init__).parameters
    filled = {name: parameters[name].default for name in BACKBONE_DEFAULTS}
    filled.update(backbone)
    arch = filled.get('arch', parameters['arch'].default)
    if filled['drop_path_rate'] is None and isinstance(arch, str):
        name = SpatialMamba.arch_aliases.get(arch.lower(), arch.lower())
        filled['drop_path_rate'] = SpatialMamba.arch_settings[name]['drop_path_rate']
    return filled


def resolved_config(path):
    """The config as mmengine resolves it (bases merged), with the backbone's
    defaulted arguments filled in (``backbone_arguments``), in JSON's types."""
    from mmengine.config import Config
    resolved = Config.fromfile(path).to_dict()
    backbone = resolved.get('model', {}).get('backbone', {})
    if backbone.get('type') == 'SpatialMamba':
        resolved['model']['backbone'] = backbone_arguments(backbone)
    return json.loads(json.dumps(resolved, sort_keys=True))


def write_resolved_configs(root=REPO_ROOT):
    """Record the resolved shipped configs of the tree at ``root`` in
    tests/data/resolved_configs.json: run this when a recipe changes on purpose
    (``python -c "from tests.tools.helpers import write_resolved_configs;
    write_resolved_configs()"`` from the repository root)."""
    resolved = {path: resolved_config(osp.join(root, path)) for path in shipped_configs(root)}
    with open(RESOLVED_CONFIGS, 'w') as f:
        json.dump(resolved, f, indent=1, sort_keys=True)
        f.write('\n')
