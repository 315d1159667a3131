"""setup.py installs the top-level ``ops/`` folder, subfolders included, as
``mmspatial.ops``."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_module_of_ops_installs_under_mmspatial_ops(tmp_path):
    subprocess.run([sys.executable, 'setup.py', '-q', 'build_py', '--build-lib',
                    str(tmp_path)], cwd=REPO_ROOT, check=True, capture_output=True)
    sources = {p.relative_to(REPO_ROOT / 'ops')
               for p in (REPO_ROOT / 'ops').rglob('*.py')}
    installed = {p.relative_to(tmp_path / 'mmspatial' / 'ops')
                 for p in (tmp_path / 'mmspatial' / 'ops').rglob('*.py')}
    assert Path('structure_aware_ssm', 'triton_backend.py') in sources
    assert installed == sources
