"""Spatial-Mamba backbone (Xiao et al., ICLR 2025), reference-exact.

Layers, order, initialisation, parameter counts and state-dict keys are those of
the reference implementation, so its released checkpoints load as they are.
The file reads top to bottom: the convolutional units (stem, downsampling), the
block around the structure-aware SSM (``mmspatial.models.layers``), a stage,
the backbone.
"""
import logging
import math
import numbers
import os
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import InputError
from ...registry import MODELS, ROOT_MODELS
from ..checkpoint import load_backbone_checkpoint
from ..layers import StructureAwareSSM

NUM_STAGES = 4


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


class Stem(nn.Module):
    """Image to stride-4 tokens.

    conv3x3 s2 (3 -> C/2) BN ReLU; a residual pair of conv3x3 (C/2) added to its
    input; conv3x3 s2 (C/2 -> 4C) BN ReLU; conv1x1 (4C -> C) BN.

    Input (batch, in_channels, H, W) in either memory format; output a
    contiguous channels-last (batch, ceil(H/4), ceil(W/4), C) tensor.
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
        # channels-last memory from the first convolution on, so that every
        # block, LayerNorm and depthwise convolution after the stem reads dense
        # (batch, H, W, C) data (oneDNN's NCHW depthwise kernels are several
        # times slower on the CPU, and NCHW memory would cost a copy per LayerNorm)
        x = self.conv1(x.contiguous(memory_format=torch.channels_last))
        x = x + self.conv2(x)
        x = self.conv3(x)
        return x.permute(0, 2, 3, 1)


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


class Mlp(nn.Module):
    """Linear (C -> ratio*C), GELU, Linear (ratio*C -> C), channels-last."""

    def __init__(self, dim, ratio=4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


@MODELS.register_module()
class SpatialMambaBlock(nn.Module):
    """Conditional position encodings around a structure-aware SSM and an MLP.

        x += dwconv3x3(x);  x += DropPath(SSM(LN(x)))
        x += dwconv3x3(x);  x += DropPath(MLP(LN(x)))

    Args:
        dim (int): channels C.
        d_state (int): SSM state size N. Default 1.
        drop_path (float): stochastic-depth rate of this block. Default 0.
        mlp_ratio (float): MLP hidden width over C. Default 4.

    Input and output channels-last (batch, H, W, C); any H, W >= 1.
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
        """x + conv(x) for channels-last x."""
        x = x.permute(0, 3, 1, 2)
        return (x + conv(x)).permute(0, 2, 3, 1)

    def forward(self, x):
        x = self._positional(self.cpe1, x)
        x = x + self.drop_path(self.self_attention(self.ln_1(x)))
        x = self._positional(self.cpe2, x)
        x = x + self.drop_path(self.mlp(self.ln_2(x)))
        return x


class SpatialMambaStage(nn.Module):
    """The blocks of one stage and the downsampling to ``next_dim`` channels that
    follows it (``None`` for the last stage).

    ``forward`` takes channels-last (batch, H, W, C) and returns what the
    backbone and the next stage need, as mmdet's ``SwinBlockSequence`` does:
    the stage output (batch, H, W, C) and the next stage's input
    (batch, ceil(H/2), ceil(W/2), next_dim), or None after the last stage.
    """

    def __init__(self, dim, depth, d_state, drop_paths, next_dim=None, with_cp=False):
        super().__init__()
        self.blocks = nn.ModuleList(
            SpatialMambaBlock(dim, d_state, drop_path=drop_paths[i]) for i in range(depth))
        self.downsample = Downsample(dim, next_dim) if next_dim is not None else None
        self.with_cp = with_cp

    def forward(self, x):
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        next_input = self.downsample(x) if self.downsample is not None else None
        return x, next_input


@ROOT_MODELS.register_module()
@MODELS.register_module()
class SpatialMamba(BaseModule):
    """Spatial-Mamba backbone.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'t'``, ``'s'``,
            ``'b'``), or a dict with ``dims`` (int, doubled per stage, or a list of
            4), ``depths`` (list of 4) and optional ``d_state`` (default 1).
        in_channels (int): image channels. Default 3.
        out_indices (Sequence[int]): stages whose outputs are returned, each
            after its own LayerNorm ``outnorm{i}``; negative indices count from
            the end. Default (0, 1, 2, 3).
        drop_path_rate (float | None): stochastic depth, linearly increasing
            over blocks, in [0, 1). None takes the paper's value for the arch
            (T 0.2, S 0.3, B 0.5; 0 for a custom dict).
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k > 0
            also freezes stages 0..k-1 (their blocks, downsampling and output
            norms). Frozen parts stay in eval mode. Default -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            Default False.
        with_cp (bool): activation checkpointing per block. Default False.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads a released classifier, an mmdet/mmseg checkpoint or a plain
            backbone state dict (see ``mmspatial.models.checkpoint``); PATH is
            a file name, a ``pathlib.Path`` or a URL.
        pretrained (str | None): deprecated spelling of
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``, accepted
            because mmseg's ``EncoderDecoder`` passes its ``pretrained`` on.

    Every argument is checked here: a bad value is an ``InputError`` naming
    it. Input (batch, in_channels, H, W) with H, W >= 32, floating point, of
    the weights' dtype (or any dtype under autocast), checked at every forward
    (a few attribute reads); output: a tuple of
    (batch, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2))) per ``out_indices`` entry.
    """

    arch_settings = {
        'tiny': dict(dims=64, depths=[2, 4, 8, 4], d_state=1, drop_path_rate=0.2),
        'small': dict(dims=64, depths=[2, 4, 21, 5], d_state=1, drop_path_rate=0.3),
        'base': dict(dims=96, depths=[2, 4, 21, 5], d_state=1, drop_path_rate=0.5),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}
    min_input_size = 32  # total stride: smaller images reach stage 4 as padding only

    def __init__(self, arch='tiny', in_channels=3, out_indices=(0, 1, 2, 3),
                 drop_path_rate=None, frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, pretrained=None):
        if pretrained is not None:
            if init_cfg is not None:
                raise InputError('SpatialMamba: give pretrained or init_cfg, not both')
            print_log('SpatialMamba: pretrained= is deprecated, use '
                      'init_cfg=dict(type="Pretrained", checkpoint=...)',
                      logger='current', level=logging.WARNING)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=self._parse_init_cfg(init_cfg))
        settings = self._parse_arch(arch)
        self.dims = settings['dims']
        self.depths = settings['depths']
        self.d_state = settings['d_state']
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']
        _check_drop_path_rate(drop_path_rate)
        if not _is_int(in_channels) or in_channels < 1:
            raise InputError(f'SpatialMamba: in_channels must be an integer >= 1, '
                             f'got {in_channels!r}')
        self.in_channels = in_channels
        self.out_indices = self._parse_out_indices(out_indices)
        if not _is_int(frozen_stages) or not -1 <= frozen_stages <= NUM_STAGES:
            raise InputError(f'SpatialMamba: frozen_stages must be in [-1, {NUM_STAGES}], '
                             f'got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = Stem(in_channels, self.dims[0])
        drop_paths = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths)):
            start = sum(self.depths[:i])
            self.layers.append(SpatialMambaStage(
                dim, depth, self.d_state, drop_paths[start:start + depth],
                next_dim=self.dims[i + 1] if i < NUM_STAGES - 1 else None,
                with_cp=with_cp))
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', nn.LayerNorm(self.dims[i]))
        self.apply(_reference_init)
        self._freeze_stages()

    # ------------------------------------------------------------- configuration
    def _parse_arch(self, arch):
        if isinstance(arch, str):
            name = self.arch_aliases.get(arch.lower(), arch.lower())
            if name not in self.arch_settings:
                allowed = sorted(self.arch_settings) + sorted(self.arch_aliases)
                raise InputError(f'SpatialMamba: unknown arch {arch!r}; choose one of '
                                 f'{allowed} or a dict(dims=..., depths=...)')
            settings = dict(self.arch_settings[name])
        elif isinstance(arch, dict):
            missing = {'dims', 'depths'} - set(arch)
            unknown = set(arch) - {'dims', 'depths', 'd_state'}
            if missing or unknown:
                raise InputError(f'SpatialMamba: an arch dict needs keys dims and '
                                 f'depths (optional d_state); missing {sorted(missing)}, '
                                 f'unknown {sorted(unknown)}')
            settings = {'d_state': 1, 'drop_path_rate': 0.0, **arch}
        else:
            raise InputError(f'SpatialMamba: arch must be a str or dict, got '
                             f'{type(arch).__name__} {arch!r}')
        dims, depths = settings['dims'], settings['depths']
        if _is_int(dims):
            dims = [dims * 2 ** i for i in range(NUM_STAGES)]
        if not isinstance(dims, (list, tuple)) or not isinstance(depths, (list, tuple)) \
                or len(dims) != NUM_STAGES or len(depths) != NUM_STAGES:
            raise InputError(f'SpatialMamba: dims and depths need {NUM_STAGES} entries, '
                             f'got dims={dims!r}, depths={depths!r}')
        for name, values in (('dims', dims), ('depths', depths)):
            if not all(_is_int(value) and value >= 1 for value in values):
                raise InputError(f'SpatialMamba: arch {name} must be integers >= 1, '
                                 f'got {name}={list(values)!r}')
        if not _is_int(settings['d_state']) or settings['d_state'] < 1:
            raise InputError(f'SpatialMamba: arch d_state must be an integer >= 1, '
                             f'got d_state={settings["d_state"]!r}')
        settings.update(dims=list(dims), depths=list(depths))
        return settings

    @staticmethod
    def _parse_out_indices(out_indices):
        if _is_int(out_indices):
            out_indices = [out_indices]
        if not isinstance(out_indices, (list, tuple)) or not out_indices:
            raise InputError(f'SpatialMamba: out_indices must name at least one of the '
                             f'{NUM_STAGES} stages (0..{NUM_STAGES - 1}, or negative '
                             f'from the end), got {out_indices!r}')
        parsed = []
        for index in out_indices:
            if not _is_int(index) or not -NUM_STAGES <= index < NUM_STAGES:
                raise InputError(f'SpatialMamba: out_indices entry {index!r} is out of '
                                 f'range for {NUM_STAGES} stages')
            parsed.append(index % NUM_STAGES)
        if len(set(parsed)) != len(parsed):
            raise InputError(f'SpatialMamba: out_indices {tuple(out_indices)} name a '
                             'stage twice')
        return tuple(parsed)

    @staticmethod
    def _parse_init_cfg(init_cfg):
        """``init_cfg`` with a ``Pretrained`` checkpoint as a string: one is
        given, it is not a directory; a ``pathlib.Path`` becomes its string."""
        if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained':
            return init_cfg
        checkpoint = init_cfg.get('checkpoint')
        if not isinstance(checkpoint, (str, os.PathLike)) or not os.fspath(checkpoint):
            raise InputError(f'SpatialMamba: init_cfg type Pretrained needs a checkpoint '
                             f'(a file name or URL), got checkpoint={checkpoint!r}')
        checkpoint = os.fspath(checkpoint)
        if osp.isdir(osp.expanduser(checkpoint)):
            raise InputError(f'SpatialMamba: init_cfg checkpoint {checkpoint!r} is a '
                             'directory; give the checkpoint file in it')
        return dict(init_cfg, checkpoint=checkpoint)

    @property
    def feature_info(self):
        """Channels and stride of each returned stage (timm's convention)."""
        return [dict(num_chs=self.dims[i], reduction=4 * 2 ** i, module=f'layers.{i}')
                for i in self.out_indices]

    # --------------------------------------------------------------- weights
    def init_weights(self):
        """Load ``init_cfg`` weights. The reference initialisation already ran in
        ``__init__``; a ``Pretrained`` init_cfg is loaded by
        :meth:`load_pretrained` (strict shapes, reported key differences) instead
        of mmengine's permissive default."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            self.load_pretrained(self.init_cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def load_pretrained(self, filename):
        """Load a checkpoint (a file name, ``pathlib.Path`` or URL) of any
        released form: see
        :func:`mmspatial.models.checkpoint.load_backbone_checkpoint`."""
        load_backbone_checkpoint(self, os.fspath(filename))

    # --------------------------------------------------------------- forward
    def _check_input(self, x):
        if x.dim() != 4:
            raise InputError(f'SpatialMamba expects images (batch, {self.in_channels}, '
                             f'H, W), got a tensor of shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise InputError(f'SpatialMamba was built for {self.in_channels} input '
                             f'channels, got {x.shape[1]} (input shape {tuple(x.shape)})')
        if min(x.shape[2:]) < self.min_input_size:
            raise InputError(f'SpatialMamba needs images of at least '
                             f'{self.min_input_size}x{self.min_input_size} for its four '
                             f'stages (total stride 32), got {x.shape[2]}x{x.shape[3]}')
        if not x.is_floating_point():
            raise InputError(f'SpatialMamba got {x.dtype} images: convert them to float '
                             'and normalise them (the data preprocessor\'s mean and std) '
                             'first')
        weight_dtype = self.patch_embed.conv1.conv.weight.dtype
        if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputError(f'SpatialMamba\'s weights are {weight_dtype}, its input is '
                             f'{x.dtype}: convert one to the other\'s dtype, or run '
                             'under torch.autocast')

    def forward(self, x):
        self._check_input(x)
        x = self.patch_embed(x)
        outs = []
        last_needed = max(self.out_indices)  # later stages would be computed for nothing
        for i, layer in enumerate(self.layers[:last_needed + 1]):
            out, x = layer(x)
            if i in self.out_indices:
                out = getattr(self, f'outnorm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    # --------------------------------------------------------------- training
    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.layers[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'outnorm{i}'))
        return modules

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_drop_path_rate(rate):
    """In [0, 1): a rate of 1 drops every residual branch (NaN loss)."""
    if (not isinstance(rate, numbers.Real) or isinstance(rate, bool)
            or not math.isfinite(rate) or not 0 <= rate < 1):
        raise InputError(f'SpatialMamba: drop_path_rate must be in [0, 1), got {rate!r}')


def _reference_init(module):
    """The reference ``_init_weights``: Linear trunc-normal(0.02) with zero bias,
    LayerNorm ones/zeros. The SSM's own parameters (not Linear layers) keep the
    initialisation ``StructureAwareSSM`` gave them. Convolutions and BatchNorm
    keep PyTorch's defaults, as in the reference."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
