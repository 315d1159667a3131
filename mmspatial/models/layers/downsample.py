"""Stride-2 downsampling between stages."""
import torch.nn as nn

from .conv_norm import ConvNormAct


class Downsample(nn.Module):
    """1x1 conv (C -> 8C) ReLU; depthwise 3x3 s2 ReLU; 1x1 conv (8C -> C_out) BN.

    Channels-last in (batch, H, W, C) and out (batch, ceil(H/2), ceil(W/2), C_out);
    C_out = 2C in every released model.
    """

    def __init__(self, dim, out_dim=None):
        super().__init__()
        out_dim = 2 * dim if out_dim is None else out_dim
        hidden = dim * 8
        self.conv = nn.Sequential(
            ConvNormAct(dim, hidden, 1, bias=True, norm=False),
            ConvNormAct(hidden, hidden, 3, stride=2, groups=hidden, bias=True,
                        norm=False),
            ConvNormAct(hidden, out_dim, 1, bias=True, act=False))

    def forward(self, x):
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
