import json
import os
from pathlib import Path

import pytest
import torch

# Without CUDA, Triton kernels run on CPU tensors under the interpreter. Triton
# reads this when a kernel is defined (at import of mmspatial.ops.triton), so it
# is set before any test module imports it.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

DATA = Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def official_keys():
    """Key names/shapes and parameter counts of the reference implementation
    (a copy of the project's shared SPEC data, kept in the repository)."""
    return json.loads((DATA / 'official_state_dict_keys.json').read_text())


@pytest.fixture(params=['truncated', 'garbage'])
def unreadable_checkpoint(request, tmp_path):
    """A checkpoint file cut in half, or bytes that are no checkpoint at all."""
    path = tmp_path / f'{request.param}.pth'
    if request.param == 'truncated':
        torch.save({'state_dict': {'weight': torch.zeros(4096)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:
        path.write_bytes(b'these bytes are not a checkpoint\n' * 64)
    return path
