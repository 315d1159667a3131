"""tools/convert_checkpoint.py reads its source by the checkpoint policy and
writes ``.pth`` or ``.safetensors`` atomically."""
import os.path as osp
import runpy

import pytest
import torch

from mmspatial.errors import InputError
from mmspatial.fileio.checkpoint_reader import TRUST_ENV
from mmspatial.models import SpatialMamba
from mmspatial.models.checkpoint import load_checkpoint_file

from .checkpoint_files import hostile

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ARCH = dict(dims=8, depths=[1, 2, 1, 1])


@pytest.fixture(scope='module')
def convert():
    return runpy.run_path(osp.join(REPO_ROOT, 'tools', 'convert_checkpoint.py'))['main']


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    torch.manual_seed(0)
    model = SpatialMamba(arch=ARCH)
    for param in model.parameters():
        torch.nn.init.normal_(param)
    return model


def test_hostile_source_runs_nothing_and_writes_nothing(convert, source, tmp_path):
    src, marker, dst = tmp_path / 'hostile.pth', tmp_path / 'ran', tmp_path / 'out.pth'
    torch.save(hostile(source.state_dict(), marker), src)
    with pytest.raises(InputError, match='refused: it names .*pathlib.Path'):
        convert([str(src), str(dst), '--to', 'backbone'])
    assert not marker.exists() and not dst.exists()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_converted_file_loads_as_the_backbone(convert, source, tmp_path, suffix):
    src, dst = tmp_path / 'released.pth', tmp_path / f'backbone{suffix}'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()},
                'meta': {}}, src)
    convert([str(src), str(dst), '--to', 'backbone'])
    written = load_checkpoint_file(dst)
    assert written['meta']['target'] == 'backbone'
    assert written['meta']['arch'] == dict(dims=[8, 16, 32, 64], depths=[1, 2, 1, 1])
    model = SpatialMamba(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert [p for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no temp file left
