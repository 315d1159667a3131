"""An independent reference of Spatial-Mamba, written from SPEC sections 1-2.

Functional, from a state dict, with the recurrence as a loop over positions and
the fusion as an explicit sum over clamped-index taps. It shares no code with
``mmspatial``: the tests compare the package's modules against it.
"""
import math

import torch
import torch.nn.functional as F


def conv_norm_act(x, sd, prefix, stride=1, groups=1, norm=True, act=True):
    weight = sd[f'{prefix}.conv.weight']
    x = F.conv2d(x, weight, sd.get(f'{prefix}.conv.bias'), stride=stride,
                 padding=weight.shape[-1] // 2, groups=groups)
    if norm:
        x = F.batch_norm(x, sd[f'{prefix}.norm.running_mean'],
                         sd[f'{prefix}.norm.running_var'], sd[f'{prefix}.norm.weight'],
                         sd[f'{prefix}.norm.bias'], training=False, eps=1e-5)
    return F.relu(x) if act else x


def stem(x, sd):
    x = conv_norm_act(x, sd, 'patch_embed.conv1', stride=2)
    x = x + conv_norm_act(conv_norm_act(x, sd, 'patch_embed.conv2.0'), sd,
                          'patch_embed.conv2.1', act=False)
    x = conv_norm_act(x, sd, 'patch_embed.conv3.0', stride=2)
    return conv_norm_act(x, sd, 'patch_embed.conv3.1', act=False)      # (b, C, H, W)


def downsample(x, sd, prefix):
    hidden = sd[f'{prefix}.conv.0.conv.weight'].shape[0]
    x = conv_norm_act(x, sd, f'{prefix}.conv.0', norm=False)
    x = conv_norm_act(x, sd, f'{prefix}.conv.1', stride=2, groups=hidden, norm=False)
    return conv_norm_act(x, sd, f'{prefix}.conv.2', act=False)


def layer_norm_channels(x, sd, prefix):
    """LayerNorm over C of a (b, C, H, W) tensor."""
    x = x.permute(0, 2, 3, 1)
    x = F.layer_norm(x, x.shape[-1:], sd[f'{prefix}.weight'], sd[f'{prefix}.bias'], 1e-5)
    return x.permute(0, 3, 1, 2)


def fusion_taps(h, kernels, alpha):
    """h (b, D, H, W); kernels: three (D, 1, 3, 3); replicate = clamped indices."""
    _, _, height, width = h.shape
    out = torch.zeros_like(h)
    for kernel, weight, dilation in zip(kernels, alpha, (1, 3, 5)):
        for ky in range(3):
            rows = (torch.arange(height) + (ky - 1) * dilation).clamp(0, height - 1)
            for kx in range(3):
                cols = (torch.arange(width) + (kx - 1) * dilation).clamp(0, width - 1)
                tap = kernel[:, 0, ky, kx][None, :, None, None]
                out = out + weight * tap * h[:, :, rows][:, :, :, cols]
    return out


def ssm(x, sd, p):
    """x (b, C, H, W) after ln_1 -> (b, C, H, W)."""
    b, _, height, width = x.shape
    w_in = sd[f'{p}.in_proj.weight']
    xz = torch.einsum('oc,bchw->bohw', w_in, x)
    u, z = xz.chunk(2, dim=1)
    d_inner = u.shape[1]
    u = F.silu(F.conv2d(u, sd[f'{p}.conv2d.weight'], sd[f'{p}.conv2d.bias'],
                        padding=1, groups=d_inner))
    n_state = sd[f'{p}.A_logs'].shape[1]
    rank = sd[f'{p}.dt_projs_weight'].shape[1]
    seq = u.flatten(2)                                                  # (b, D, L)
    x_dbl = torch.einsum('cd,bdl->bcl', sd[f'{p}.x_proj_weight'], seq)
    dt, B, C = x_dbl[:, :rank], x_dbl[:, rank:rank + n_state], x_dbl[:, rank + n_state:]
    delta = F.softplus(torch.einsum('dr,brl->bdl', sd[f'{p}.dt_projs_weight'], dt)
                       + sd[f'{p}.dt_projs_bias'][None, :, None])
    A = -torch.exp(sd[f'{p}.A_logs'])                                   # (D, N)
    state = seq.new_zeros(b, d_inner, n_state)
    states = []
    for t in range(seq.shape[-1]):
        state = (torch.exp(delta[:, :, t, None] * A) * state
                 + delta[:, :, t, None] * B[:, None, :, t] * seq[:, :, t, None])
        states.append(state)
    hs = torch.stack(states, dim=-1).reshape(b, d_inner, n_state, height, width)
    fs = f'{p}.state_fusion'
    kernels = [sd[f'{fs}.kernel_3'], sd[f'{fs}.kernel_3_1'], sd[f'{fs}.kernel_3_2']]
    y = sum(C.view(b, 1, n_state, height, width)[:, :, n]
            * fusion_taps(hs[:, :, n], kernels, sd[f'{fs}.alpha'])
            for n in range(n_state))
    y = y + sd[f'{p}.Ds'][None, :, None, None] * u
    y = layer_norm_channels(y, sd, f'{p}.out_norm') * F.silu(z)
    return torch.einsum('oc,bchw->bohw', sd[f'{p}.out_proj.weight'], y)


def mlp(x, sd, p):
    x = torch.einsum('oc,bchw->bohw', sd[f'{p}.fc1.weight'], x) + sd[f'{p}.fc1.bias'][:, None, None]
    x = F.gelu(x)
    return torch.einsum('oc,bchw->bohw', sd[f'{p}.fc2.weight'], x) + sd[f'{p}.fc2.bias'][:, None, None]


def block(x, sd, p):
    dim = x.shape[1]
    x = x + F.conv2d(x, sd[f'{p}.cpe1.weight'], sd[f'{p}.cpe1.bias'], padding=1, groups=dim)
    x = x + ssm(layer_norm_channels(x, sd, f'{p}.ln_1'), sd, f'{p}.self_attention')
    x = x + F.conv2d(x, sd[f'{p}.cpe2.weight'], sd[f'{p}.cpe2.bias'], padding=1, groups=dim)
    return x + mlp(layer_norm_channels(x, sd, f'{p}.ln_2'), sd, f'{p}.mlp')


def backbone_forward(sd, x, depths, out_indices=(0, 1, 2, 3)):
    """Eval-mode backbone form: returns [(b, C_i, H_i, W_i)] for out_indices."""
    x = stem(x, sd)
    outs = []
    for i, depth in enumerate(depths):
        if i > 0:
            x = downsample(x, sd, f'layers.{i - 1}.downsample')
        for j in range(depth):
            x = block(x, sd, f'layers.{i}.blocks.{j}')
        if i in out_indices:
            outs.append(layer_norm_channels(x, sd, f'outnorm{i}'))
    return outs


def expected_dt_rank(dim):
    return math.ceil(dim / 16)
