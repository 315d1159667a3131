"""Fixtures of the configs' and tools' tests: tiny data sets in the real
formats, the tools as importable modules, one CPU thread."""
import glob
import importlib.util
import os.path as osp
import sys

import pytest
import torch

from .helpers import SIZE, TOOLS


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads that
    wait on each other make small convolutions 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_checkpoint_loaders():
    """The tools register their own local-file loader with mmengine (see
    tools/_checks.py, trust_local_checkpoints): undo it after each test."""
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:
        yield
        return
    schemes = CheckpointLoader._schemes.copy()
    yield
    CheckpointLoader._schemes = schemes


def _import_file(module_name, path):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def tools():
    """Load a tool script as a module: ``tools('test')`` is tools/test.py.

    The scripts import their private sibling helpers (``_checks``, ...) as
    top-level modules, as they do when run as scripts; those are imported
    first, by name, so that sys.path stays as it is. The tools themselves
    get names of their own (``test`` and ``train`` are too common)."""
    def load(name, folder=TOOLS):
        for helper in sorted(glob.glob(osp.join(folder, '_*.py'))):
            helper_name = osp.splitext(osp.basename(helper))[0]
            if helper_name not in sys.modules:
                _import_file(helper_name, helper)
        module_name = f'mmspatial_tools_{name}'
        if module_name not in sys.modules:
            _import_file(module_name, osp.join(folder, f'{name}.py'))
        return sys.modules[module_name]
    return load


@pytest.fixture(scope='session')
def data(tmp_path_factory):
    """COCO-, mmseg- and ImageNet-format sets of a few 64x64 images."""
    from mmspatial.datasets import generate_synthetic_coco, generate_synthetic_seg
    root = tmp_path_factory.mktemp('data')
    kwargs = dict(num_train=4, num_val=2, image_size=SIZE, seed=0)
    generate_synthetic_coco(str(root / 'coco'), **kwargs)
    generate_synthetic_seg(str(root / 'seg'), **kwargs)
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        lines = []
        for label in range(2):
            folder = root / 'imagenet' / split / f'n{label:08d}'
            folder.mkdir(parents=True)
            for i in range(2):
                image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f'{i}.jpg'), image)
                lines.append(f'n{label:08d}/{i}.jpg {label}')
        (root / 'imagenet' / 'meta').mkdir(exist_ok=True)
        (root / 'imagenet' / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root
