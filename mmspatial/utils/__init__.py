"""What the command-line tools under ``tools/`` share: loading and checking
configs, building their models and runners, synthetic batches for the
analysis tools, CPU-only distributed runs, and the scripts' entry point."""
from .cli import run_tool
from .config import (backbone_cfg, build_model, build_runner, check_checkpoints,
                     check_data_roots, check_pretrained, load_config,
                     pretrained_checkpoint)
from .distributed import setup_cpu_distributed
from .synthetic_inputs import data_samples, synthetic_batch

__all__ = ['backbone_cfg', 'build_model', 'build_runner', 'check_checkpoints',
           'check_data_roots', 'check_pretrained', 'load_config',
           'pretrained_checkpoint', 'run_tool', 'setup_cpu_distributed', 'data_samples',
           'synthetic_batch']
