"""The structure-aware state-space layer of Spatial-Mamba (``self_attention``).

One row-major selective scan per image, structure-aware fusion of the states
with three dilated depthwise stencils, then the observation ``y = C h + D u``
(SPEC section 1). The scan/fusion/observation run in ``mmspatial.ops``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmspatial.ops import state_fusion, structure_aware_ssm
from mmspatial.registry import MODELS


@MODELS.register_module()
class StateFusion(nn.Module):
    """Structure-aware state fusion: one 3x3 depthwise kernel per dilation
    (1, 3, 5) and a weight per dilation, with replicate borders (SPEC section 1).

    Args:
        dim (int): channels D.

    Input (batch, D, H, W) -> output (batch, D, H, W) in the input's dtype.
    Inside ``StructureAwareSSM`` the fused operator reads these parameters
    directly; ``forward`` runs the fusion on its own, for use in other models.
    Nothing is cached: the kernels are read on every call, so evaluation always
    follows the current weights (the reference code froze a folded kernel at
    the first evaluation).
    """

    def __init__(self, dim):
        super().__init__()
        self.kernel_3 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_1 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_2 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.alpha = nn.Parameter(torch.ones(3))

    def stacked_kernels(self):
        """(3, dim, 3, 3) kernels for dilations 1, 3, 5."""
        return torch.stack([self.kernel_3, self.kernel_3_1, self.kernel_3_2]).squeeze(2)

    def forward(self, x):
        return state_fusion(x, self.stacked_kernels(), self.alpha)


@MODELS.register_module()
class StructureAwareSSM(nn.Module):
    """Structure-aware SSM on channels-last features.

    Args:
        dim (int): model width C; the inner width is ``2 * C``.
        d_state (int): state size N (1 in every released model).
        dt_rank (int | None): rank of the step-size projection;
            default ``ceil(C / 16)``.
        dt_min, dt_max, dt_init_floor (float): range of the initial step sizes.

    Input (batch, H, W, C) -> output (batch, H, W, C), channels-last as in the
    backbone's blocks; any H, W >= 1.
    """

    def __init__(self, dim, d_state=1, dt_rank=None, dt_min=1e-3, dt_max=1e-1,
                 dt_init_floor=1e-4):
        super().__init__()
        self.d_inner = 2 * dim
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        self.dt_range = (dt_min, dt_max, dt_init_floor)
        d_inner, rank = self.d_inner, self.dt_rank

        # Parameter names and layouts are those of the released checkpoints.
        self.x_proj_weight = nn.Parameter(torch.empty(rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(d_inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(d_inner))
        self.A_logs = nn.Parameter(torch.empty(d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(d_inner))
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.state_fusion = StateFusion(d_inner)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """The reference initialisation of the SSM's own parameters.

        ``x_proj_weight`` keeps ``nn.Linear``'s default (uniform +-1/sqrt(fan_in)),
        as in the reference, where it is made from ``nn.Linear`` layers; the step
        bias makes ``softplus(bias)`` log-uniform in [dt_min, dt_max].
        """
        dt_min, dt_max, dt_floor = self.dt_range
        bound = self.d_inner ** -0.5
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(states).repeat(self.d_inner, 1))
        self.Ds.fill_(1.0)

    def forward(self, x):
        # in_proj as two products (same values as one and a split): x and z come
        # out contiguous, so the depthwise convolution and the gate read them
        # without a strided copy
        x, z = (F.linear(x, weight) for weight in self.in_proj.weight.chunk(2))
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))                  # (b, D, H, W)
        x_dbl = F.conv2d(x, self.x_proj_weight[:, :, None, None])       # (b, R+2N, H, W)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        # the step projection as a product over channels-last rows (same values as
        # the 1x1 convolution): delta comes out channels-last like u, which the
        # op reads without transposing
        dt = F.linear(dt.permute(0, 2, 3, 1), self.dt_projs_weight).permute(0, 3, 1, 2)
        y = structure_aware_ssm(
            x, dt, -torch.exp(self.A_logs.float()), B, C, self.Ds,
            self.state_fusion.stacked_kernels(), self.state_fusion.alpha,
            delta_bias=self.dt_projs_bias, delta_softplus=True)         # float32
        # in the norm's dtype: a half()/bfloat16() model's LayerNorm refuses
        # float32 input (a no-op for float32 models, also under autocast)
        y = self.out_norm(y.permute(0, 2, 3, 1).to(self.out_norm.weight.dtype))
        return self.out_proj(F.silu(z) * y)
