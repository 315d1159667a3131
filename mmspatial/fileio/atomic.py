"""Crash-safe writes: a temporary file in the same directory, fsynced, then
``os.replace``d into place.

A reader sees either the old file or the whole new one, never half of it: a
kill, Ctrl-C or a failed write (full disk, a file-size limit) during the write
leaves the old file as it was and removes the temporary one where it can.
"""
import glob
import os
import os.path as osp
import tempfile
from contextlib import contextmanager


def _fsync_dir(directory):
    """Make the rename itself durable (a no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SUFFIX = '.tmp'


def temporary_files(path):
    """The temporary files that :func:`atomic_write` calls for ``path`` left
    beside it: those of writes in progress, or that a kill interrupted (which
    no ``except`` can remove). ``path``'s name may be a glob pattern."""
    directory, name = osp.split(os.fspath(path))
    return sorted(glob.glob(osp.join(directory, f'.{name}.*{_SUFFIX}')))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path, mode='wb', encoding=None):
    """Open a temporary file beside ``path`` for writing; on leaving the block
    without an exception it is flushed, fsynced and renamed to ``path``.

    Args:
        path (str | os.PathLike): the file to (re)place.
        mode (str): ``'wb'`` or ``'w'``.
        encoding (str | None): for text mode.

    Yields:
        file: the open temporary file.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(f'atomic_write: mode must be "wb" or "w", got {mode!r}')
    path = os.fspath(path)
    directory = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=_SUFFIX,
                               dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it, not 0600
        with os.fdopen(fd, mode, encoding=encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def atomic_write_text(path, text, encoding='utf-8'):
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, 'w', encoding=encoding) as file:
        file.write(text)


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)``, atomically."""
    import torch
    with atomic_write(path, 'wb') as file:
        torch.save(obj, file)
