import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def official_keys():
    """Key names/shapes and parameter counts of the reference implementation
    (a copy of the project's shared SPEC data, kept in the repository)."""
    return json.loads((DATA / 'official_state_dict_keys.json').read_text())
