"""Fixtures of the configs' and tools' tests: tiny data sets in the real
formats, the tool scripts run in this process, one CPU thread."""
import os.path as osp
import runpy
from types import SimpleNamespace

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


@pytest.fixture(scope='session')
def tools():
    """A tool script as a namespace: ``tools('test').main([...])`` runs
    tools/test.py in this process (without its ``__main__`` block)."""
    loaded = {}

    def load(name, folder=TOOLS):
        path = osp.join(folder, f'{name}.py')
        if path not in loaded:
            loaded[path] = SimpleNamespace(**runpy.run_path(path))
        return loaded[path]
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
