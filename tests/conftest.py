import json
import logging
import os
from pathlib import Path

import pytest
import torch

# Without CUDA, Triton kernels run on CPU tensors under the interpreter. Triton
# reads this when a kernel is defined (at import of a Triton backend), so it
# is set before any test module imports it.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

DATA = Path(__file__).parent / 'data'


@pytest.fixture(scope='session')
def official_keys():
    """Key names/shapes and parameter counts of the reference implementation
    (a copy of the project's shared SPEC data, kept in the repository)."""
    return json.loads((DATA / 'official_state_dict_keys.json').read_text())


@pytest.fixture
def logged():
    """The records mmengine's current logger receives during the test (its
    messages do not reach pytest's caplog: MMLogger is outside logging's tree)."""
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def warnings_in(records):
    """The messages of the WARNING (and worse) records among ``records``."""
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


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


# --- The Triton tests must run where they are required -----------------------
# Without triton the Triton tests skip themselves, and a green run would claim
# coverage it does not have. With MMSPATIAL_REQUIRE_TRITON_TESTS=1 (`make test`,
# hence CI) the run fails unless at least one test whose node id names Triton
# passed and no module naming Triton was skipped whole (so no other test may
# have "triton" in its name).
REQUIRE_TRITON_TESTS = os.environ.get('MMSPATIAL_REQUIRE_TRITON_TESTS') == '1'
_triton_tests = dict(passed=0, skipped_modules=[])


def _names_triton(nodeid):
    return 'triton' in nodeid.lower()


def pytest_collectreport(report):
    if report.skipped and _names_triton(report.nodeid):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        _triton_tests['skipped_modules'].append(f'{report.nodeid}: {reason}')


def pytest_runtest_logreport(report):
    if report.when == 'call' and report.passed and _names_triton(report.nodeid):
        _triton_tests['passed'] += 1


def pytest_sessionfinish(session, exitstatus):
    if not REQUIRE_TRITON_TESTS or exitstatus not in (0, 1):
        return  # not required, or interrupted / usage error: nothing to add
    problems = list(_triton_tests['skipped_modules'])
    if not _triton_tests['passed']:
        problems.append('no Triton test passed')
    if problems:
        reporter = session.config.pluginmanager.get_plugin('terminalreporter')
        lines = ['MMSPATIAL_REQUIRE_TRITON_TESTS=1 but the Triton tests did not run '
                 '(install requirements/tests.txt, which brings triton):'] + problems
        for line in lines:
            if reporter is None:
                print(line)
            else:
                reporter.write_line(line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
