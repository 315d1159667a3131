"""tools/demo.py writes crash-safe: its early-stop checkpoint goes through the
config's AtomicCheckpointHook (and into ``last_checkpoint``), its summaries
are renamed into place whole. On a toy run, in seconds."""
import json
import os
import os.path as osp

import torch

from ..engine.toy_training import toy_runner

REAL_REPLACE = os.replace


def test_early_stop_saves_through_the_checkpoint_hook(tools, tmp_path, monkeypatch):
    demo = tools('demo')
    runner = toy_runner(tmp_path / 'work', max_iters=6, validate=True,
                        checkpoint=dict(interval=4, max_keep_ckpts=1))
    hook = demo.DemoHook(deadline=0)  # past: stop after the first iteration
    runner.register_hook(hook)
    renamed = []
    monkeypatch.setattr(os, 'replace', lambda src, dst: (REAL_REPLACE(src, dst),
                                                         renamed.append(osp.basename(dst))))
    runner.train()

    assert hook.stopped_early and runner.iter == 1
    work_dir = tmp_path / 'work'
    assert renamed == ['iter_1.pth', 'last_checkpoint']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_1.pth')
    checkpoint = torch.load(work_dir / 'iter_1.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == 1  # resumes after the one iteration done


def test_summaries_are_renamed_into_place(tools, tmp_path, monkeypatch):
    demo = tools('demo')
    result = dict(config='c.py', iterations=2, batch_size=2, stopped_early=False,
                  train_images=4, val_images=2, train_minutes=0.1, eval_minutes=0.1,
                  total_minutes=0.3, metrics={'mIoU': dict(before=1.0, after=2.0)},
                  predictions_png='p.png', loss_png='l.png')
    renamed = []
    monkeypatch.setattr(os, 'replace', lambda src, dst: (REAL_REPLACE(src, dst),
                                                         renamed.append(osp.basename(dst))))
    demo.write_summary({'segmentation': result}, str(tmp_path))
    assert renamed == ['summary.json', 'summary.md']
    assert json.loads((tmp_path / 'summary.json').read_text()) == {'segmentation': result}
    assert '| mIoU | 1.0 | 2.0 |' in (tmp_path / 'summary.md').read_text()
