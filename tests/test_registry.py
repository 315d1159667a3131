"""mmspatial/registry.py: ``import mmspatial`` makes the backbone and the hooks
buildable from every OpenMMLab registry, and the building blocks from every
registry in the ``mmspatial`` scope only."""
import subprocess
import sys

import pytest
import torch

import mmspatial
from mmspatial.models import SpatialMamba, SpatialMambaBlock, StateFusion, StructureAwareSSM

REGISTRIES = ['mmengine.registry', 'mmdet.registry', 'mmseg.registry', 'mmpretrain.registry']


@pytest.mark.parametrize('module', REGISTRIES)
@pytest.mark.parametrize('type_name', ['SpatialMamba', 'mmspatial.SpatialMamba'])
def test_backbone_builds_from_registry(module, type_name):
    registry = __import__(module, fromlist=['MODELS']).MODELS
    model = registry.build(dict(type=type_name, arch=dict(dims=8, depths=[1, 1, 1, 1])))
    assert isinstance(model, SpatialMamba)


@pytest.mark.parametrize('module', REGISTRIES)
@pytest.mark.parametrize('name,kwargs', [('AtomicCheckpointHook', dict(interval=2)),
                                         ('RandomStateHook', {})])
@pytest.mark.parametrize('prefix', ['', 'mmspatial.'])
def test_hooks_build_from_registry(module, name, kwargs, prefix):
    """The shipped configs name the hooks plainly under mmdet's, mmseg's and
    mmpretrain's default scopes: from each library's registry, and from
    mmengine's under that library's default scope (the Runner's way)."""
    from mmengine.registry import HOOKS as ROOT_HOOKS
    from mmengine.registry import DefaultScope
    registry = __import__(module, fromlist=['HOOKS']).HOOKS
    cfg = dict(type=prefix + name, **kwargs)
    assert type(registry.build(cfg)) is getattr(mmspatial.engine, name)
    with DefaultScope.overwrite_default_scope(module.split('.')[0]):
        assert type(ROOT_HOOKS.build(cfg)) is getattr(mmspatial.engine, name)


@pytest.mark.parametrize('name', ['StructureAwareSSM', 'StateFusion', 'SpatialMambaBlock'])
def test_building_blocks_stay_out_of_the_root_registry(name):
    """Their general names are for the ``mmspatial`` scope alone."""
    from mmengine.registry import MODELS as ROOT_MODELS

    from mmspatial.registry import MODELS
    assert name not in ROOT_MODELS.module_dict
    assert MODELS.get(name) is getattr(mmspatial.models, name)


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


# ------------------------------------------------------------ building blocks
def _randomized_backbone():
    """A small backbone with non-trivial values everywhere (fusion kernels,
    alphas, BatchNorm statistics), so that equal outputs mean equal weights."""
    backbone = SpatialMamba(arch=dict(dims=8, depths=[1, 1, 1, 1]), drop_path_rate=0.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.dtype.is_floating_point:
                tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return backbone


def _forward_backward(module, x):
    """Output, input gradient and parameter gradients of ``module`` at ``x``."""
    x = x.clone().requires_grad_()
    out = module(x)
    out.pow(2).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize('module', REGISTRIES)
@pytest.mark.parametrize('type_name,cls,kwargs', [
    ('StructureAwareSSM', StructureAwareSSM, dict(dim=8)),
    ('SpatialMambaBlock', SpatialMambaBlock, dict(dim=8, d_state=1)),
])
def test_building_block_from_registry_matches_backbone_layer(module, type_name, cls, kwargs):
    """Built from a task library's registry with the backbone layer's weights,
    the layer (or block) gives the backbone's own outputs and gradients."""
    registry = __import__(module, fromlist=['MODELS']).MODELS
    built = registry.build(dict(type=f'mmspatial.{type_name}', **kwargs))
    assert type(built) is cls
    block = _randomized_backbone().layers[0].blocks[0]
    own = block.self_attention if cls is StructureAwareSSM else block
    built.load_state_dict(own.state_dict())  # strict: the same parameters
    x = torch.randn(2, 9, 11, 8, generator=torch.Generator().manual_seed(1))
    out, grad_x, grads = _forward_backward(built, x)
    own_out, own_grad_x, own_grads = _forward_backward(own, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, own_out)
    torch.testing.assert_close(grad_x, own_grad_x)
    assert grads.keys() == own_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, own_grads[name], msg=name)


@pytest.mark.parametrize('module', REGISTRIES)
def test_state_fusion_from_registry_is_the_backbone_layer_fusion(module):
    """The backbone's SSM layer runs its fusion inside the fused operator. A
    StateFusion built from a registry, given the layer's fusion weights,
    reproduces that operator when composed with the scan and the readout
    (y = C h + D u, one state), values and gradients."""
    from mmspatial.ops import selective_scan, structure_aware_ssm
    registry = __import__(module, fromlist=['MODELS']).MODELS
    ssm = _randomized_backbone().layers[1].blocks[0].self_attention  # D = 32 channels
    fusion = registry.build(dict(type='mmspatial.StateFusion', dim=ssm.d_inner))
    assert type(fusion) is StateFusion
    fusion.load_state_dict(ssm.state_fusion.state_dict())

    gen = torch.Generator().manual_seed(2)
    batch, channels, height, width = 2, ssm.d_inner, 7, 10
    u = torch.randn(batch, channels, height, width, generator=gen)
    delta = torch.randn(batch, channels, height, width, generator=gen)
    B, C = torch.randn(2, batch, 1, height, width, generator=gen)
    A = -torch.exp(ssm.A_logs.detach())

    def composed(u):
        states = selective_scan(u.flatten(2), delta.flatten(2), A, B.flatten(2),
                                ssm.dt_projs_bias.detach())           # (b, D, 1, H*W)
        fused = fusion(states.view(batch, channels, height, width))   # (b, D, H, W)
        return fused * C + ssm.Ds.detach()[:, None, None] * u

    def fused_op(u):
        return structure_aware_ssm(
            u, delta, A, B, C, ssm.Ds.detach(), ssm.state_fusion.stacked_kernels(),
            ssm.state_fusion.alpha, delta_bias=ssm.dt_projs_bias.detach())

    results = []
    for function, weights in ((composed, fusion), (fused_op, ssm.state_fusion)):
        x = u.clone().requires_grad_()
        out = function(x)
        out.pow(2).sum().backward()
        results.append((out.detach(), x.grad,
                        *(p.grad for _, p in sorted(weights.named_parameters()))))
    assert len(results[0]) == 6  # y, du, and the four fusion parameters' gradients
    for value, expected in zip(*results):
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)
