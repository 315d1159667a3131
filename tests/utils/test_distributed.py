"""Two-process training through tools/dist_train.sh (torchrun; on a CPU the
tools set up gloo, see mmspatial/utils/distributed.py):
mmengine's DDP, nothing of our own. Both ranks must train; rank 0 saves.

The processes see no GPU (``CUDA_VISIBLE_DEVICES=''``), so that the test
checks the CPU path on any machine, and they meet on a free port, so that two
test runs on one machine do not collide."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import torch

from mmspatial.datasets import generate_synthetic_coco

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO_ROOT,
                      'configs/detection/demo/maskrcnn_spatialmamba_t_synthetic.py')


def free_port():
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_two_cpu_processes(tmp_path):
    generate_synthetic_coco(str(tmp_path / 'data/synthetic/coco'), num_train=4,
                            num_val=2, image_size=96, seed=0)
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='',
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    result = subprocess.run(
        ['bash', osp.join(REPO_ROOT, 'tools/dist_train.sh'), DET_CONFIG, '2',
         '--work-dir', str(work_dir), '--cfg-options',
         'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
         'train_dataloader.batch_size=1'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'on CPU with gloo, 2 processes' in log, log[-3000:]
    assert re.search(r'Distributed training: True\s+GPU number: 2', log), log[-3000:]
    # DDP all-reduces the gradients of every step across both processes: rank 0
    # reaching the last iteration means rank 1 ran every step as well.
    assert re.search(r'Iter\(train\) \[2/2\]', log), log[-3000:]
    assert osp.isfile(work_dir / 'iter_2.pth')
    # the demo config's RandomStateHook keeps no states here, and says so
    assert 'RandomStateHook: a distributed run keeps no random states' in log, log[-3000:]
    meta = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)['meta']
    assert 'random_states' not in meta
