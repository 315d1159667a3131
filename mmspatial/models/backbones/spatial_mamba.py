"""Spatial-Mamba backbone (Xiao et al., ICLR 2025), reference-exact.

Layers, order, initialisation, parameter counts and state-dict keys are those of
the reference implementation, so its released checkpoints load as they are.
"""
import logging

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import load_backbone_checkpoint
from ..layers import Downsample, SpatialMambaBlock, Stem

NUM_STAGES = 4


class SpatialMambaStage(nn.Module):
    """The blocks of one stage and the downsampling to ``next_dim`` channels that
    follows it (``None`` for the last stage). ``forward`` runs the blocks only, channels-last
    (batch, H, W, C) in and out; the backbone applies ``downsample``.
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
        return x


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
            over blocks. None takes the paper's value for the arch (T 0.2,
            S 0.3, B 0.5; 0 for a custom dict).
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k > 0
            also freezes stages 0..k-1 (their blocks, downsampling and output
            norms). Frozen parts stay in eval mode. Default -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            Default False.
        with_cp (bool): activation checkpointing per block. Default False.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads a released classifier, an mmdet/mmseg checkpoint or a plain
            backbone state dict (see ``mmspatial.models.checkpoint``).
        pretrained (str | None): deprecated spelling of
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``, accepted
            because mmseg's ``EncoderDecoder`` passes its ``pretrained`` on.

    Input (batch, in_channels, H, W) with H, W >= 32; output: a tuple of
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
                raise ValueError('SpatialMamba: give pretrained or init_cfg, not both')
            print_log('SpatialMamba: pretrained= is deprecated, use '
                      'init_cfg=dict(type="Pretrained", checkpoint=...)',
                      logger='current', level=logging.WARNING)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        settings = self._parse_arch(arch)
        self.dims = settings['dims']
        self.depths = settings['depths']
        self.d_state = settings['d_state']
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']
        self.in_channels = in_channels
        self.out_indices = self._parse_out_indices(out_indices)
        if not -1 <= frozen_stages <= NUM_STAGES:
            raise ValueError(f'frozen_stages must be in [-1, {NUM_STAGES}], '
                             f'got {frozen_stages}')
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
                raise ValueError(f'SpatialMamba: unknown arch {arch!r}; choose one of '
                                 f'{allowed} or a dict(dims=..., depths=...)')
            settings = dict(self.arch_settings[name])
        elif isinstance(arch, dict):
            missing = {'dims', 'depths'} - set(arch)
            unknown = set(arch) - {'dims', 'depths', 'd_state'}
            if missing or unknown:
                raise ValueError(f'SpatialMamba: an arch dict needs keys dims and '
                                 f'depths (optional d_state); missing {sorted(missing)}, '
                                 f'unknown {sorted(unknown)}')
            settings = {'d_state': 1, 'drop_path_rate': 0.0, **arch}
        else:
            raise TypeError(f'SpatialMamba: arch must be a str or dict, got '
                            f'{type(arch).__name__}')
        dims = settings['dims']
        if isinstance(dims, int):
            dims = [dims * 2 ** i for i in range(NUM_STAGES)]
        depths = list(settings['depths'])
        if len(dims) != NUM_STAGES or len(depths) != NUM_STAGES:
            raise ValueError(f'SpatialMamba: dims and depths need {NUM_STAGES} entries, '
                             f'got dims={dims}, depths={depths}')
        settings.update(dims=list(dims), depths=depths)
        return settings

    @staticmethod
    def _parse_out_indices(out_indices):
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -NUM_STAGES <= index < NUM_STAGES:
                raise ValueError(f'SpatialMamba: out_indices entry {index} is out of '
                                 f'range for {NUM_STAGES} stages')
            parsed.append(index % NUM_STAGES)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f'SpatialMamba: out_indices {tuple(out_indices)} name a '
                             'stage twice')
        return tuple(parsed)

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
        """Load a checkpoint of any released form: see
        :func:`mmspatial.models.checkpoint.load_backbone_checkpoint`."""
        load_backbone_checkpoint(self, filename)

    # --------------------------------------------------------------- forward
    def _check_input(self, x):
        if x.dim() != 4:
            raise ValueError(f'SpatialMamba expects images (batch, {self.in_channels}, '
                             f'H, W), got a tensor of shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'SpatialMamba was built for {self.in_channels} input '
                             f'channels, got {x.shape[1]} (input shape {tuple(x.shape)})')
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f'SpatialMamba needs images of at least '
                             f'{self.min_input_size}x{self.min_input_size} for its four '
                             f'stages (total stride 32), got {x.shape[2]}x{x.shape[3]}')

    def forward(self, x):
        self._check_input(x)
        x = self.patch_embed(x)
        outs = []
        last_needed = max(self.out_indices)  # later stages would be computed for nothing
        for i, layer in enumerate(self.layers[:last_needed + 1]):
            if i > 0:
                x = self.layers[i - 1].downsample(x)
            x = layer(x)
            if i in self.out_indices:
                out = getattr(self, f'outnorm{i}')(x)
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


def _reference_init(module):
    """The reference ``_init_weights``: Linear trunc-normal(0.02) with zero bias,
    LayerNorm ones/zeros. The SSM's own parameters (not Linear layers) keep the
    initialisation ``StructureAwareSSM`` gave them. Convolutions and BatchNorm keep PyTorch's defaults, as in the reference."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
