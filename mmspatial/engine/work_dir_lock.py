"""One training per work dir: rank 0 holds a lock file there for the run.

Two trainings writing one work dir overwrite each other's checkpoints and
``last_checkpoint`` without a word. :func:`work_dir_lock` takes the lock file
``<work_dir>/train.lock`` before the Runner writes anything and removes it when
the run ends, by an exception too. The file names its holder (host, pid,
since when) as JSON; a second training in that work dir stops with an
:class:`~mmspatial.errors.InputError` naming the first.

- A lock left by a run that died (same host, its pid gone) is taken over,
  with a warning.
- A lock from another host is respected: its pid cannot be checked from here.
  The error says to delete the file if that run is over.
- On one host, ``flock`` on the file settles two runs that start at once.
- Only rank 0 of a distributed run locks; the other ranks share its work dir.
"""
import errno
import json
import logging
import os
import os.path as osp
import socket
import time
from contextlib import contextmanager

from mmengine.logging import print_log

from ..errors import InputError

LOCK_FILE = 'train.lock'
# Where each launcher puts the process's global rank (mmengine's slurm and
# mpi setups set RANK only later, inside the Runner).
RANK_VARIABLES = ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK')


def is_rank_zero(launcher='none'):
    """True for the process that locks: every one without a launcher, else the
    one whose rank (``RANK``, or the launcher's own variable) is 0 or unset."""
    if launcher == 'none':
        return True
    variable = {'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}.get(launcher, 'RANK')
    return os.environ.get('RANK', os.environ.get(variable, '0')) == '0'


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(holder, path):
    if holder is None:  # it has the lock and is writing its name
        return f'a training that is starting (lock file {path})'
    return (f'pid {holder.get("pid")} on host {holder.get("host")!r} since '
            f'{holder.get("since")} (lock file {path})')


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode('utf-8', 'replace')
    if not text.strip():
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return holder if isinstance(holder, dict) else {'host': '?', 'pid': '?',
                                                    'since': f'? ({text[:80]!r})'}


def _open_locked(path):
    """An fd of ``path`` with an exclusive ``flock``, or None if another
    process holds it. Retries when the file was removed while we waited."""
    import fcntl  # POSIX: importing the package stays possible elsewhere
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            return fd, False
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its holder released it meanwhile
            same = False
        if same:
            return fd, True
        os.close(fd)


def _acquire(work_dir):
    path = osp.join(work_dir, LOCK_FILE)
    try:
        os.makedirs(work_dir, exist_ok=True)
        fd, locked = _open_locked(path)
    except OSError as error:
        raise InputError(f'cannot lock work dir {work_dir!r} for this training: '
                         f'{error.strerror or error} ({path})') from error
    host = socket.gethostname()
    try:
        holder = _read(fd)
        if not locked:
            raise InputError(
                f'work dir {work_dir!r} is in use by another training: '
                f'{_describe(holder, path)}. Wait for it to end, or give this '
                'run another --work-dir.')
        if holder is not None:
            if holder.get('host') != host:
                raise InputError(
                    f'work dir {work_dir!r} is locked by a training on another host: '
                    f'{_describe(holder, path)}. If that run is over, delete {path}; '
                    'otherwise give this run another --work-dir.')
            pid = holder.get('pid')
            if isinstance(pid, int) and _pid_alive(pid):
                raise InputError(
                    f'work dir {work_dir!r} is in use by another training: '
                    f'{_describe(holder, path)}. Wait for it to end, or give this '
                    f'run another --work-dir (if that pid is no training, delete {path}).')
            print_log(f'taking over the stale lock of work dir {work_dir!r}: '
                      f'{_describe(holder, path)}, a process that no longer runs',
                      logger='current', level=logging.WARNING)
        mine = dict(host=host, pid=os.getpid(),
                    since=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(mine) + '\n').encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, path


@contextmanager
def work_dir_lock(work_dir, launcher='none'):
    """Hold ``<work_dir>/train.lock`` in the block (rank 0 only; see the module
    docstring).

    Raises:
        InputError: another training holds the work dir.
    """
    if not is_rank_zero(launcher):
        yield
        return
    fd, path = _acquire(work_dir)
    try:
        yield
    finally:
        try:
            os.remove(path)  # while still flocked: a waiting run then retries
        except FileNotFoundError:
            pass
        os.close(fd)
