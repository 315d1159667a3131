"""What the command-line tools under ``tools/`` share: loading and checking
configs, building their models and runners, synthetic batches for the
analysis tools, CPU-only distributed runs, and the scripts' entry point."""
from .cli import add_shared_arguments, run_tool, tool_parser
from .config import (backbone_cfg, build_model, build_runner, check_checkpoints,
                     load_config, pretrained_checkpoint)
from .distributed import setup_cpu_distributed
from .input_checks import PRETRAINED_HINT, check_inputs
from .resume import check_training_state, checkpoint_to_resume
from .synthetic_inputs import data_samples, synthetic_batch

__all__ = ['add_shared_arguments', 'check_training_state', 'checkpoint_to_resume',
           'tool_parser', 'backbone_cfg', 'build_model', 'build_runner', 'check_checkpoints',
           'PRETRAINED_HINT', 'check_inputs', 'load_config',
           'pretrained_checkpoint', 'run_tool', 'setup_cpu_distributed', 'data_samples',
           'synthetic_batch']
