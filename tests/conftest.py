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
