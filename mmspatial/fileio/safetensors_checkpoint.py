"""Checkpoints in the ``.safetensors`` format: tensors only, no pickle.

A ``.safetensors`` file holds named tensors and a string-to-string header, so
reading one can run nothing. It is read as the OpenMMLab form,
``{'state_dict': tensors}``, the form every loader of the package and of
mmengine takes (``load_from``, ``init_cfg``, the tools, the inferencers); the
tensor names stay as they are, so ``'state_dict'`` or ``'meta'`` can never
be mistaken for a tensor. The checkpoint's ``meta``, where the package wrote
one, travels as JSON under :data:`META_KEY` and comes back as ``'meta'``.

It carries no optimizer or scheduler state, so it cannot resume a training.
The format has no checksum: a changed byte in tensor data is not detected
(its header, offsets and sizes are checked).
"""
import importlib
import json

import torch

from ..errors import InputError
from .atomic import atomic_write

SUFFIX = '.safetensors'
META_KEY = 'mmspatial.meta'


def _safetensors(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError('.safetensors files need the safetensors package: pip '
                         'install -r requirements/openmmlab.txt') from None


def is_safetensors(path):
    """Whether ``path`` names a ``.safetensors`` file."""
    return str(path).endswith(SUFFIX)


def read_safetensors(path, map_location='cpu'):
    """``{'state_dict': {name: tensor}}``, plus ``'meta'`` where the file has
    one of this package's; tensors go to ``map_location`` where it names a
    device, and stay on the CPU otherwise."""
    safe_open = _safetensors('safetensors').safe_open
    with safe_open(path, framework='pt', device='cpu') as file:
        state_dict = {name: file.get_tensor(name) for name in file.keys()}
        header = file.metadata() or {}
    if isinstance(map_location, (str, torch.device)) and str(map_location) != 'cpu':
        state_dict = {name: t.to(map_location) for name, t in state_dict.items()}
    checkpoint = dict(state_dict=state_dict)
    if META_KEY in header:
        checkpoint['meta'] = json.loads(header[META_KEY])
    return checkpoint


def save_safetensors(checkpoint, path):
    """Write ``checkpoint['state_dict']`` (and a JSON-able ``'meta'``) to
    ``path`` atomically.

    Args:
        checkpoint (dict): ``{'state_dict': {name: tensor}, 'meta': {...}}``.
        path (str | os.PathLike): the ``.safetensors`` file.
    """
    save = _safetensors('safetensors.torch').save
    # each tensor its own contiguous memory: the format stores no views
    tensors = {name: t.detach().to('cpu', copy=True).contiguous()
               for name, t in checkpoint['state_dict'].items()}
    header = ({META_KEY: json.dumps(checkpoint['meta'])}
              if checkpoint.get('meta') is not None else None)
    data = save(tensors, metadata=header)
    with atomic_write(path, 'wb') as file:
        file.write(data)
