"""One training per work dir: the lock file rank 0 holds for the run (the
second tools/train.py refused: tests/tools/test_interrupted_save.py; two ranks
sharing one work dir: tests/utils/test_distributed.py)."""
import json
import logging
import os
import socket
import subprocess

import pytest

from mmspatial.engine import work_dir_lock as lock_module
from mmspatial.engine.work_dir_lock import work_dir_lock
from mmspatial.errors import InputError

HOST = socket.gethostname()


def write_lock(work_dir, host, pid):
    work_dir.mkdir(exist_ok=True)
    (work_dir / 'train.lock').write_text(json.dumps(
        dict(host=host, pid=pid, since='2026-01-01 00:00:00 UTC')))


def holder(work_dir):
    return json.loads((work_dir / 'train.lock').read_text())


@pytest.fixture
def warnings_logged(monkeypatch):
    logged = []
    monkeypatch.setattr(lock_module, 'print_log', lambda message, logger=None, level=None:
                        logged.append((level, message)))
    return logged


def test_lock_names_its_holder_and_is_released(tmp_path):
    with work_dir_lock(str(tmp_path / 'work')):
        assert holder(tmp_path / 'work') == dict(
            host=HOST, pid=os.getpid(), since=holder(tmp_path / 'work')['since'])
    assert not (tmp_path / 'work' / 'train.lock').exists()


def test_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(KeyError):
        with work_dir_lock(str(tmp_path)):
            raise KeyError('a failing run')
    assert not (tmp_path / 'train.lock').exists()
    with work_dir_lock(str(tmp_path)):  # free again
        pass


def test_second_lock_is_refused_naming_the_first(tmp_path):
    with work_dir_lock(str(tmp_path)):
        with pytest.raises(InputError, match=rf'in use by another training: pid {os.getpid()} '
                           rf'on host {HOST!r} since .* \(lock file .*train\.lock\)'):
            with work_dir_lock(str(tmp_path)):
                pass
        assert holder(tmp_path)['pid'] == os.getpid()  # the first keeps it


def test_lock_file_of_a_live_process_is_respected(tmp_path):
    """Named in the file, alive, on this host: refused even without its flock."""
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        write_lock(tmp_path, HOST, sleeper.pid)
        with pytest.raises(InputError, match=f'pid {sleeper.pid} on host'):
            with work_dir_lock(str(tmp_path)):
                pass
        assert holder(tmp_path)['pid'] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, warnings_logged):
    finished = subprocess.Popen(['true'])
    finished.wait()
    dead_pid = finished.pid
    write_lock(tmp_path, HOST, dead_pid)
    with work_dir_lock(str(tmp_path)):
        assert holder(tmp_path)['pid'] == os.getpid()
    (level, message), = warnings_logged
    assert level == logging.WARNING
    assert 'stale lock' in message and f'pid {dead_pid} on host {HOST!r}' in message


def test_lock_of_another_host_is_respected(tmp_path):
    write_lock(tmp_path, 'gpu-node-7', 4242)
    with pytest.raises(InputError, match=r"another host: pid 4242 on host 'gpu-node-7' .*"
                       r'If that run is over, delete .*train\.lock'):
        with work_dir_lock(str(tmp_path)):
            pass
    assert holder(tmp_path)['host'] == 'gpu-node-7'


@pytest.mark.parametrize('launcher, variable', [('pytorch', 'RANK'), ('slurm', 'SLURM_PROCID'),
                                                ('mpi', 'OMPI_COMM_WORLD_RANK')])
def test_only_rank_zero_locks(tmp_path, monkeypatch, launcher, variable):
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, '1')
    with work_dir_lock(str(tmp_path)):
        with work_dir_lock(str(tmp_path), launcher):  # rank 1 shares rank 0's work dir
            pass
    assert not (tmp_path / 'train.lock').exists()
    with work_dir_lock(str(tmp_path), launcher):
        assert not (tmp_path / 'train.lock').exists()
    monkeypatch.setenv(variable, '0')
    with work_dir_lock(str(tmp_path), launcher):
        assert holder(tmp_path)['pid'] == os.getpid()
