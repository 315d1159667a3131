"""Reading a checkpoint file without running code from it.

:func:`read_checkpoint` is the one reader of the package (see
``docs/checkpoints.md``):

1. ``.safetensors`` files are read as tensors (no pickle at all).
2. A zip-format file (``torch.save``'s) is checked entry by entry against its
   CRC-32s first: a corrupted file is refused before any tensor is used.
3. The globals its pickle names are listed without unpickling
   (:mod:`.pickle_globals`). Any that torch's weights-only reader does not
   allow by default and :mod:`.checkpoint_globals` does not list, and the file
   is refused: an :class:`~mmspatial.errors.InputError` names the file and
   those globals, and nothing from it has run.
4. It is read with ``torch.load(weights_only=True)``, the listed globals
   allowed for that call only (``torch.serialization.safe_globals``).

The one way past step 3 is the user's explicit opt-in, the environment
variable :data:`TRUST_ENV` set to ``1`` (what the tools' ``--trust-checkpoint``
sets): a refused file is then read with full pickle, which can run any code
the file holds, and a WARNING names the file. Files the policy accepts read
the same way with or without it, without a warning.

A legacy (non-zip) ``torch.save`` file has no checksums; it gets steps 3
and 4. A file that is a plain pickle, not ``torch.save``'s, is refused.
"""
import logging
import os
import os.path as osp
import pickle
import zipfile
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from ..errors import InputError, MissingFileError
from .checkpoint_globals import allowed_globals
from .pickle_globals import globals_in, pickle_opcodes
from .safetensors_checkpoint import is_safetensors, read_safetensors
from .zip_integrity import CorruptedEntry, verify_zip_entries

#: Set to ``1`` to read checkpoints the policy refuses with full pickle.
TRUST_ENV = 'MMSPATIAL_TRUST_CHECKPOINT'
ZIP_MAGIC = b'PK\x03\x04'


def checkpoint_trusted():
    """Whether the user opted in (``MMSPATIAL_TRUST_CHECKPOINT=1``) to read
    checkpoints that name objects the policy refuses."""
    return os.environ.get(TRUST_ENV) == '1'


def opt_in_hint():
    return (f'If you trust the file, pass --trust-checkpoint (or set {TRUST_ENV}=1): '
            'it is then read with full pickle, which can run any code it holds; '
            'see docs/checkpoints.md')


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _unreadable(path, error, note=''):
    return InputError(f'checkpoint {path!r} could not be read (truncated, corrupted '
                      f'or not a PyTorch file?): {type(error).__name__}: '
                      f'{_first_line(error)}{note}')


# ------------------------------------------------------------- inspection

def _zip_globals(path):
    """The globals of a zip checkpoint's pickle, after its CRC check."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            raise zipfile.BadZipFile('the archive names an entry twice')
        if any(name.endswith('/constants.pkl') for name in names):
            raise InputError(f'checkpoint {path!r} is a TorchScript archive (a model '
                             'with code), not a checkpoint: load it with torch.jit.load')
        pickles = [name for name in names if name.split('/')[1:] == ['data.pkl']]
        if len(pickles) != 1:
            raise zipfile.BadZipFile(f'{len(pickles)} data.pkl entries, not 1')
        unchecked = verify_zip_entries(path)
        if unchecked:
            print_log(f'checkpoint {path!r} records no CRC-32 for {len(unchecked)} '
                      'entries (saved with compute_crc32 off): their integrity is '
                      'not checked', logger='current', level=logging.INFO)
        with archive.open(pickles[0]) as data:
            return globals_in(pickle_opcodes(data))


def _legacy_globals(path):
    """The globals of a legacy (non-zip) ``torch.save`` file: its header
    pickles, the object and the storage keys, read in sequence."""
    with open(path, 'rb') as file:
        magic = pickle_opcodes(file)
        found = globals_in(magic)
        numbers = [arg for name, arg in magic if name == 'LONG1']
        if numbers != [torch.serialization.MAGIC_NUMBER]:
            named = (f'; it names {", ".join(found)}: refused without running '
                     f'anything' if found else '')
            raise InputError(f'checkpoint {path!r} is not a PyTorch checkpoint but a '
                             f'plain pickle (torch.save writes a zip archive){named}')
        for _ in range(4):  # protocol version, system info, the object, storage keys
            found += globals_in(pickle_opcodes(file))
    print_log(f'checkpoint {path!r} is in the legacy (non-zip) format, which records '
              'no checksums: its integrity is not checked', logger='current',
              level=logging.INFO)
    return list(dict.fromkeys(found))


def _torch_default_globals():
    from torch._weights_only_unpickler import _get_allowed_globals
    return set(_get_allowed_globals())


def unlisted_globals(path):
    """The globals the file at ``path`` names that the policy does not allow.

    Zip files are CRC-checked on the way (``InputError`` when one does not
    match).

    Raises:
        InputError: corrupted, not a checkpoint, or a plain pickle.
    """
    try:
        with open(path, 'rb') as file:
            is_zip = file.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError as error:
        raise _unreadable(path, error) from error
    try:
        found = _zip_globals(path) if is_zip else _legacy_globals(path)
    except CorruptedEntry as entry:
        raise InputError(f'checkpoint {path!r} is corrupted: the bytes of its entry '
                         f'{entry} do not match the CRC-32 recorded when it was '
                         'saved (a changed byte); it was not used') from None
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
        note = '' if is_zip else ' (a legacy non-zip file has no checksums)'
        raise _unreadable(path, error, note) from error
    allowed = _torch_default_globals() | {name for _, name in allowed_globals()}
    return [name for name in found if name not in allowed]


# ------------------------------------------------------------------ reading

def _weights_only_error(error):
    """The reason in torch's weights-only error, without its advice to load
    with ``weights_only=False``."""
    text = str(error)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1]
    return _first_line(text)


def read_checkpoint(path, map_location='cpu'):
    """The object in the checkpoint file ``path``, read by the package's policy
    (module docstring).

    Args:
        path (str | os.PathLike): a local file.
        map_location: as ``torch.load`` takes it.

    Raises:
        MissingFileError: no such file.
        InputError: a directory, unreadable, corrupted, or refused (naming the
            globals it asked for and how to opt in).
    """
    path = osp.expanduser(os.fspath(path))
    if osp.isdir(path):
        raise InputError(f'checkpoint {path!r} is a directory, not a checkpoint file')
    if not osp.isfile(path):
        raise MissingFileError(f'checkpoint not found: {path!r}')
    if is_safetensors(path):
        try:
            return read_safetensors(path, map_location)
        except InputError:
            raise
        except Exception as error:
            raise _unreadable(path, error) from error

    unlisted = unlisted_globals(path)
    if unlisted:
        reason = f'it names {", ".join(unlisted)}'
        if not checkpoint_trusted():
            raise InputError(
                f'checkpoint {path!r} refused: {reason}, which a checkpoint of '
                'weights does not need and which could run code when read; nothing '
                f'from it was run. {opt_in_hint()}')
    else:
        try:
            with torch.serialization.safe_globals(allowed_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            reason = _weights_only_error(error)
            if not checkpoint_trusted():
                raise InputError(f'checkpoint {path!r} refused while reading: '
                                 f'{reason}; nothing it names beyond the allowed '
                                 f'objects was run. {opt_in_hint()}') from None
        except Exception as error:
            raise _unreadable(path, error) from error
    print_log(f'reading checkpoint {path!r} with full pickle, as {TRUST_ENV}=1 '
              f'(--trust-checkpoint) allows, although {reason}: it can run any code '
              'it holds', logger='current', level=logging.WARNING)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise _unreadable(path, error) from error


# -------------------------------------------------------------------- URLs

def download_checkpoint(url, model_dir=None, progress=True, check_hash=False,
                        file_name=None):
    """The local copy of the checkpoint at ``url``, downloaded once into
    ``model_dir`` (default: torch hub's ``<hub_dir>/checkpoints``), as
    ``torch.hub.load_state_dict_from_url`` does, but without reading it: the
    caller reads the copy with :func:`read_checkpoint`, on every load, so a
    cached file passes the same checks as a new one.

    Raises:
        InputError: the URL names no file, or the download failed.
    """
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    file_name = file_name or osp.basename(urlparse(url).path)
    if not file_name:
        raise InputError(f'checkpoint URL {url!r} names no file')
    cached = osp.join(model_dir, file_name)
    if osp.exists(cached):
        return cached
    os.makedirs(model_dir, exist_ok=True)
    hash_prefix = None
    if check_hash:
        match = HASH_REGEX.search(file_name)
        hash_prefix = match.group(1) if match else None
    print_log(f'Downloading {url} to {cached}', logger='current')
    try:
        download_url_to_file(url, cached, hash_prefix, progress=progress)
    except Exception as error:
        raise InputError(f'checkpoint {url!r} could not be downloaded: '
                         f'{type(error).__name__}: {_first_line(error)}') from error
    return cached


def read_checkpoint_url(url, model_dir=None, map_location=None, progress=True,
                        check_hash=False, file_name=None):
    """``torch.hub.load_state_dict_from_url``'s signature and cache, read by
    :func:`read_checkpoint`."""
    return read_checkpoint(download_checkpoint(url, model_dir, progress, check_hash,
                                               file_name), map_location)
