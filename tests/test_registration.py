"""``import mmspatial`` makes the backbone buildable from every OpenMMLab registry."""
import subprocess
import sys

import pytest

import mmspatial  # noqa: F401
from mmspatial.models import SpatialMamba

REGISTRIES = ['mmengine.registry', 'mmdet.registry', 'mmseg.registry', 'mmpretrain.registry']


@pytest.mark.parametrize('module', REGISTRIES)
@pytest.mark.parametrize('type_name', ['SpatialMamba', 'mmspatial.SpatialMamba'])
def test_backbone_builds_from_registry(module, type_name):
    registry = __import__(module, fromlist=['MODELS']).MODELS
    model = registry.build(dict(type=type_name, arch=dict(dims=8, depths=[1, 1, 1, 1])))
    assert isinstance(model, SpatialMamba)


def test_import_needs_no_task_library():
    code = ('import sys, mmspatial\n'
            'loaded = [m for m in ("mmdet", "mmseg", "mmpretrain") if m in sys.modules]\n'
            'assert not loaded, loaded\n'
            'from mmengine.registry import MODELS\n'
            'assert MODELS.get("SpatialMamba") is mmspatial.SpatialMamba\n')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_custom_imports_in_a_config(tmp_path):
    """The documented one-line route: custom_imports in an mm config."""
    config = tmp_path / 'cfg.py'
    config.write_text(
        "custom_imports = dict(imports=['mmspatial'], allow_failed_imports=False)\n"
        "model = dict(type='SpatialMamba', arch='t')\n")
    code = ('from mmengine.config import Config\n'
            'from mmengine.utils import import_modules_from_strings\n'
            f'cfg = Config.fromfile({str(config)!r})\n'
            'import_modules_from_strings(**cfg.custom_imports)\n'
            'from mmdet.registry import MODELS\n'
            'print(type(MODELS.build(cfg.model)).__name__)\n')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip().endswith('SpatialMamba')
