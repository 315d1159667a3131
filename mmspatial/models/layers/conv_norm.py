"""Convolution, optional BatchNorm, optional ReLU: the unit of the stem and of
the downsampling layers (state-dict keys ``conv.*`` and ``norm.*``)."""
import torch.nn as nn


class ConvNormAct(nn.Module):
    """``conv -> [BatchNorm] -> [ReLU]`` on (batch, C, H, W) tensors.

    Args:
        in_channels (int), out_channels (int), kernel_size (int), stride (int),
        groups (int): as for ``nn.Conv2d`` (padding is ``kernel_size // 2``).
        bias (bool): conv bias.
        norm (bool): add a BatchNorm2d named ``norm``.
        act (bool): end with a ReLU.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1,
                 groups=1, bias=False, norm=True, act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x
