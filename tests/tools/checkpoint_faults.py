"""Test-only: a hook that breaks one checkpoint save in the middle of writing
the file, the way a kill, Ctrl-C or a full disk would.

A config takes it with ``custom_imports=dict(imports=['tests.tools.checkpoint_faults'])``
and ``custom_hooks=[dict(type='CheckpointWriteFault', fault=..., at_save=2,
report=PATH)]``. Just before the ``at_save``-th save writes its file it arms:

- ``'sigkill'``, ``'sigint'``: the next file opened for binary writing (the
  checkpoint's file, or its temporary file where the save is atomic) gets
  ``head_bytes`` bytes, flushed to disk; then the process sends itself the
  signal, before the rest is written.
- ``'fsize'``: ``RLIMIT_FSIZE`` becomes half the size the checkpoint will
  have, so the write fails half-way with ``EFBIG``, as on a full disk.

``report`` (JSON) says where the fault struck, for the test to check that it
struck inside the write.
"""
import builtins
import io
import json
import os
import resource
import signal
import time

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

FAULTS = ('sigkill', 'sigint', 'fsize')


class _InterruptedFile:
    """A file whose first ``write`` stops after ``head_bytes`` with a signal."""

    def __init__(self, file, head_bytes, signum, report):
        self.file, self.head_bytes, self.signum, self.report = file, head_bytes, signum, report

    def write(self, data):
        data = memoryview(data)
        assert len(data) > self.head_bytes, 'the checkpoint is smaller than its head'
        self.file.write(data[:self.head_bytes])
        self.file.flush()
        os.fsync(self.file.fileno())
        _write_report(self.report, path=os.readlink(f'/proc/self/fd/{self.file.fileno()}'),
                      written=self.head_bytes, total=len(data))
        os.kill(os.getpid(), self.signum)
        for _ in range(500):  # Python raises KeyboardInterrupt at the next instruction
            time.sleep(0.01)
        raise AssertionError(f'signal {self.signum} was not delivered')

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self.file.__exit__(*exc_info)

    def __getattr__(self, name):
        return getattr(self.file, name)


def _write_report(report, **fields):
    with open(report, 'w') as f:
        json.dump(fields, f)


@HOOKS.register_module()
class CheckpointWriteFault(Hook):
    """Break the ``at_save``-th checkpoint save inside its write (see the module
    docstring)."""

    priority = 'LOWEST'  # after the hooks that add to the checkpoint

    def __init__(self, fault, report, at_save=2, head_bytes=4096):
        assert fault in FAULTS, fault
        self.fault, self.report, self.at_save, self.head_bytes = (fault, report, at_save,
                                                                  head_bytes)
        self.saves = 0

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves += 1
        if self.saves != self.at_save:
            return
        if self.fault == 'fsize':
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)  # what mmengine will write
            limit = buffer.tell() // 2
            _write_report(self.report, limit=limit, total=buffer.tell())
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            return
        signum = signal.SIGKILL if self.fault == 'sigkill' else signal.SIGINT
        real_open, real_fdopen = builtins.open, os.fdopen

        def interrupted(opener):
            def open_(file, mode='r', *args, **kwargs):
                opened = opener(file, mode, *args, **kwargs)
                if 'w' not in mode or 'b' not in mode:
                    return opened
                builtins.open, os.fdopen = real_open, real_fdopen
                return _InterruptedFile(opened, self.head_bytes, signum, self.report)
            return open_

        builtins.open, os.fdopen = interrupted(real_open), interrupted(real_fdopen)
