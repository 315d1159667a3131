from .block import Mlp, SpatialMambaBlock
from .conv_norm import ConvNormAct
from .downsample import Downsample
from .stem import Stem
from .structure_aware_ssm import StateFusion, StructureAwareSSM

__all__ = ['ConvNormAct', 'Downsample', 'Mlp', 'SpatialMambaBlock', 'StateFusion',
           'Stem', 'StructureAwareSSM']
