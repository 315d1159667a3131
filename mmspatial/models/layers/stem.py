"""The stride-4 convolutional stem of Spatial-Mamba (``patch_embed``)."""
import torch.nn as nn

from .conv_norm import ConvNormAct


class Stem(nn.Module):
    """Image to stride-4 tokens.

    conv3x3 s2 (3 -> C/2) BN ReLU; a residual pair of conv3x3 (C/2) added to its
    input; conv3x3 s2 (C/2 -> 4C) BN ReLU; conv1x1 (4C -> C) BN.

    Input (batch, in_channels, H, W); output channels-last
    (batch, ceil(H/4), ceil(W/4), C).
    """

    def __init__(self, in_channels, embed_dim):
        super().__init__()
        hidden = embed_dim // 2
        self.conv1 = ConvNormAct(in_channels, hidden, 3, stride=2)
        self.conv2 = nn.Sequential(
            ConvNormAct(hidden, hidden, 3),
            ConvNormAct(hidden, hidden, 3, act=False))
        self.conv3 = nn.Sequential(
            ConvNormAct(hidden, embed_dim * 4, 3, stride=2),
            ConvNormAct(embed_dim * 4, embed_dim, 1, act=False))

    def forward(self, x):
        x = self.conv1(x)
        x = x + self.conv2(x)
        x = self.conv3(x)
        return x.permute(0, 2, 3, 1)
