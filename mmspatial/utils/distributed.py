"""``--launcher pytorch`` on machines without CUDA."""
import torch


def setup_cpu_distributed(cfg):
    """Make ``--launcher pytorch`` work on machines without CUDA.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` before creating the process
    group and gives DDP the rank's GPU as ``device_ids``; neither exists on a
    CPU. Here the process group is created with gloo (mmengine then skips its
    own init) and DDP gets ``device_ids=None``, as CPU modules need. Anything
    but the pytorch launcher on a CUDA-less machine is left as it is.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if dist.get_rank() == 0:
        print(f'note: no CUDA: distributed {cfg.launcher} launch on CPU with gloo, '
              f'{dist.get_world_size()} processes')
