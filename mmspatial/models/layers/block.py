"""One Spatial-Mamba block (``layers.i.blocks.j``)."""
import torch.nn as nn
from mmcv.cnn.bricks import DropPath

from .structure_aware_ssm import StructureAwareSSM


class Mlp(nn.Module):
    """Linear (C -> ratio*C), GELU, Linear (ratio*C -> C), channels-last."""

    def __init__(self, dim, ratio=4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SpatialMambaBlock(nn.Module):
    """Conditional position encodings around a structure-aware SSM and an MLP.

        x += dwconv3x3(x);  x += DropPath(SSM(LN(x)))
        x += dwconv3x3(x);  x += DropPath(MLP(LN(x)))

    Args:
        dim (int): channels C.
        d_state (int): SSM state size.
        drop_path (float): stochastic-depth rate of this block.
        mlp_ratio (float): MLP hidden width over C.

    Input and output channels-last (batch, H, W, C).
    """

    def __init__(self, dim, d_state=1, drop_path=0.0, mlp_ratio=4.0):
        super().__init__()
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = StructureAwareSSM(dim, d_state)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    @staticmethod
    def _positional(conv, x):
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x):
        x = x + self._positional(self.cpe1, x)
        x = x + self.drop_path(self.self_attention(self.ln_1(x)))
        x = x + self._positional(self.cpe2, x)
        x = x + self.drop_path(self.mlp(self.ln_2(x)))
        return x
