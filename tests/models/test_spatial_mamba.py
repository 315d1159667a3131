"""The backbone against the SPEC: parameter counts, key names, shapes, the
independent reference forward, configuration errors and training behaviour."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmspatial.models import SpatialMamba
from mmspatial.models.layers import StructureAwareSSM

from . import reference_spatial_mamba as ref

SMALL_ARCH = dict(dims=8, depths=[1, 2, 1, 1])


def small_backbone(**kwargs):
    kwargs.setdefault('arch', SMALL_ARCH)
    return SpatialMamba(**kwargs)


def randomize_(module, seed=0):
    """Non-trivial values everywhere (BN statistics, fusion kernels, alphas)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype.is_floating_point:
                noise = torch.randn(tensor.shape, generator=gen) * 0.2
                if name.endswith('running_var'):
                    tensor.copy_(noise.abs() + 0.5)
                else:
                    tensor.add_(noise)
    return module


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_count_and_keys_match_reference(arch, official_keys):
    model = SpatialMamba(arch=arch)
    expected = official_keys[arch]
    assert sum(p.numel() for p in model.parameters()) == expected['backbone_params']
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(state) == list(expected['backbone_keys'])
    assert state == expected['backbone_keys']


@pytest.mark.parametrize('alias,name', [('t', 'tiny'), ('S', 'small'), ('b', 'base')])
def test_arch_aliases(alias, name):
    assert SpatialMamba._parse_arch(SpatialMamba, alias) == \
        SpatialMamba._parse_arch(SpatialMamba, name)


def test_arch_dict_and_d_state():
    model = SpatialMamba(arch=dict(dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], d_state=2))
    assert model.dims == [8, 16, 24, 32]
    ssm = model.layers[2].blocks[0].self_attention
    assert ssm.A_logs.shape == (48, 2)
    assert ssm.x_proj_weight.shape == (ref.expected_dt_rank(24) + 4, 48)
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [8, 16, 24, 32]


@pytest.mark.parametrize('arch,match', [
    ('huge', "unknown arch 'huge'"),
    (dict(dims=8), 'missing'),
    (dict(dims=8, depths=[1, 1, 1]), '4 entries'),
    (dict(dims=8, depths=[1, 1, 1, 1], mlp=2), 'unknown'),
])
def test_bad_arch_is_a_clear_error(arch, match):
    with pytest.raises(ValueError, match=match):
        SpatialMamba(arch=arch)


def test_bad_indices_are_clear_errors():
    with pytest.raises(ValueError, match='out of range'):
        small_backbone(out_indices=(4,))
    with pytest.raises(ValueError, match='twice'):
        small_backbone(out_indices=(3, -1))
    with pytest.raises(ValueError, match='frozen_stages'):
        small_backbone(frozen_stages=5)


def test_matches_independent_reference():
    """Layer order, the scan, the fusion borders and the readout, end to end."""
    torch.manual_seed(0)
    model = randomize_(small_backbone()).eval()
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        outs = model(x)
        expected = ref.backbone_forward(model.state_dict(), x, model.depths)
    assert len(outs) == 4
    for out, exp in zip(outs, expected):
        assert out.shape == exp.shape
        torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-4)


def test_ssm_layer_of_tiny_matches_reference():
    torch.manual_seed(0)
    layer = randomize_(StructureAwareSSM(dim=64)).eval()
    x = torch.randn(1, 9, 13, 64)
    with torch.no_grad():
        out = layer(x)
        state = {f'ssm.{k}': v for k, v in layer.state_dict().items()}
        expected = ref.ssm(x.permute(0, 3, 1, 2), state, 'ssm')
    torch.testing.assert_close(out.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('height,width,batch', [(97, 131, 1), (800, 1333, 1), (32, 33, 2)])
def test_odd_input_sizes(height, width, batch):
    model = small_backbone(arch=dict(dims=4, depths=[1, 1, 1, 1])).eval()
    with torch.no_grad():
        outs = model(torch.randn(batch, 3, height, width))
    size = (height, width)
    for i, out in enumerate(outs):
        # every stride-2 3x3 convolution (two in the stem, one per downsampling)
        # rounds odd sizes up
        for _ in range(2 if i == 0 else 1):
            size = tuple(-(-s // 2) for s in size)
        assert out.shape == (batch, 4 * 2 ** i) + size
        assert torch.isfinite(out).all()


def test_out_indices_subset_and_negative():
    model = small_backbone(out_indices=(1, -1)).eval()
    assert model.out_indices == (1, 3)
    assert [k for k in model.state_dict() if k.startswith('outnorm')] == [
        'outnorm1.weight', 'outnorm1.bias', 'outnorm3.weight', 'outnorm3.bias']
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape for o in outs] == [(1, 16, 8, 12), (1, 64, 2, 3)]
    assert [f['num_chs'] for f in model.feature_info] == [16, 64]
    assert [f['reduction'] for f in model.feature_info] == [8, 32]


def test_bad_inputs_are_clear_errors():
    model = small_backbone().eval()
    with pytest.raises(ValueError, match='3 input channels, got 1'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32'):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match='batch, 3, H, W'):
        model(torch.randn(3, 64, 64))


def test_eval_follows_weight_changes():
    """The reference cached the folded fusion kernel at the first evaluation."""
    torch.manual_seed(0)
    model = randomize_(small_backbone(drop_path_rate=0.0, norm_eval=True))
    x = torch.randn(1, 3, 48, 40)
    model.eval()
    with torch.no_grad():
        first_eval = model(x)[-1]
        model.train()
        first_train = model(x)[-1]
        fusion = model.layers[3].blocks[0].self_attention.state_fusion
        fusion.kernel_3_2.mul_(-2.0)
        fusion.alpha.add_(0.5)
        second_train = model(x)[-1]
        model.eval()
        second_eval = model(x)[-1]
    torch.testing.assert_close(first_train, first_eval)
    torch.testing.assert_close(second_train, second_eval)
    assert not torch.allclose(first_eval, second_eval)


def test_reference_initialisation():
    torch.manual_seed(0)
    model = SpatialMamba(arch='tiny')
    ssm = model.layers[0].blocks[0].self_attention
    step = torch.nn.functional.softplus(ssm.dt_projs_bias)
    assert step.min() >= 1e-4 - 1e-7 and step.max() <= 0.1 + 1e-6
    assert torch.equal(ssm.A_logs, torch.zeros_like(ssm.A_logs))  # log(1), N = 1
    assert torch.equal(ssm.Ds, torch.ones_like(ssm.Ds))
    assert torch.equal(ssm.state_fusion.kernel_3_1, torch.ones_like(ssm.state_fusion.kernel_3_1))
    assert torch.equal(ssm.state_fusion.alpha, torch.ones(3))
    assert ssm.dt_projs_weight.abs().max() <= ssm.dt_rank ** -0.5
    assert ssm.x_proj_weight.abs().max() <= ssm.d_inner ** -0.5
    fc1 = model.layers[2].blocks[0].mlp.fc1
    # trunc_normal_(std=0.02) truncates at +-2 absolute, as timm's default in the reference
    assert abs(fc1.weight.std().item() - 0.02) < 0.002 and abs(fc1.weight.mean().item()) < 1e-3
    assert torch.equal(fc1.bias, torch.zeros_like(fc1.bias))
    assert torch.equal(model.outnorm2.weight, torch.ones(256))


def test_drop_path_rate_defaults_per_arch():
    model = SpatialMamba(arch='tiny')
    last = model.layers[3].blocks[-1].drop_path
    assert last.drop_prob == pytest.approx(0.2)
    assert isinstance(model.layers[0].blocks[0].drop_path, torch.nn.Identity)


def test_frozen_stages_and_norm_eval():
    model = small_backbone(frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.outnorm0,
              model.outnorm1]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in model.layers[2].parameters())
    assert model.layers[2].training
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert model.layers[0].blocks[0].mlp.fc1.weight.grad is None
    assert model.layers[2].blocks[0].mlp.fc1.weight.grad is not None


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = randomize_(small_backbone(drop_path_rate=0.0))
    checkpointed = small_backbone(drop_path_rate=0.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 40, 56)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        loss = sum((o ** 2).mean() for o in model(x))
        loss.backward()
        grads.append(model.layers[1].blocks[1].self_attention.x_proj_weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
