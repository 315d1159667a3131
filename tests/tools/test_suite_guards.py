"""Guards of the test environment: the Python floor of tools/setup_env.sh and
the rule that `make test` fails when the Triton tests did not run."""
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_setup_env_refuses_an_old_python(tmp_path):
    """Before creating anything, with a message naming the version."""
    fake = tmp_path / 'bin' / 'python3'
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1" = "-V" ] && echo "Python 3.9.18" && exit 0\n'
                    'exec "$0.real" "$@"\n')  # every check fails: there is no .real
    fake.chmod(0o755)
    venv = tmp_path / 'venv'
    env = dict(os.environ, MMSPATIAL_VENV=str(venv),
               PATH=f'{fake.parent}{os.pathsep}{os.environ["PATH"]}')
    result = subprocess.run(['bash', str(REPO_ROOT / 'tools' / 'setup_env.sh')], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'mmspatial needs Python >= 3.10' in result.stderr
    assert 'Python 3.9.18' in result.stderr
    assert not venv.exists()


def test_make_test_fails_when_the_kernel_tests_did_not_run():
    """MMSPATIAL_REQUIRE_TRITON_TESTS=1 (set by `make test`) and no Triton test
    ran: the run fails and says why (tests/conftest.py)."""
    env = dict(os.environ, MMSPATIAL_REQUIRE_TRITON_TESTS='1')
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', 'tests/ops/test_nonfinite_inputs.py', '-q',
         '-k', 'not triton', '-p', 'no:cacheprovider'],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:]
    assert 'the Triton tests did not run' in result.stdout
    assert 'no Triton test passed' in result.stdout
