"""Checkpoints given as URLs, from a local HTTP server: downloaded into torch
hub's cache and read by the same policy, the cached copy on every load, both
by the package and by mmengine's loader inside ``local_checkpoint_policy``."""
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import mmengine.runner.checkpoint as mmengine_checkpoint
import pytest
import torch
from mmengine.runner import CheckpointLoader

from mmspatial.errors import InputError
from mmspatial.fileio.checkpoint_reader import TRUST_ENV
from mmspatial.models.checkpoint import load_checkpoint_file, local_checkpoint_policy

from .checkpoint_files import hostile

WEIGHTS = {'layers.0.weight': torch.ones(2, 3)}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        self.server.requests.append(self.path)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """``(folder served, its base URL, the paths requested so far)``, with
    torch hub's folder in ``tmp_path``."""
    monkeypatch.delenv(TRUST_ENV, raising=False)
    for name in ('no_proxy', 'NO_PROXY'):
        monkeypatch.setenv(name, '*')
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    root = tmp_path / 'served'
    root.mkdir()
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(_QuietHandler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{httpd.server_address[1]}', httpd.requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_hostile_url_is_refused_and_so_is_its_cached_copy(server, tmp_path):
    root, base, requests = server
    marker = tmp_path / 'ran'
    torch.save(hostile(WEIGHTS, marker), root / 'model.pth')
    cached = tmp_path / 'hub' / 'checkpoints' / 'model.pth'
    refused = re.escape(f"'{cached}' refused: it names ") + '.*pathlib.Path'
    with pytest.raises(InputError, match=refused):
        load_checkpoint_file(f'{base}/model.pth')
    assert cached.is_file() and len(requests) == 1
    with pytest.raises(InputError, match='refused'):  # from the cache
        load_checkpoint_file(f'{base}/model.pth')
    with local_checkpoint_policy(), pytest.raises(InputError, match='refused'):
        CheckpointLoader.load_checkpoint(f'{base}/model.pth', map_location='cpu')
    assert len(requests) == 1  # both read the cached copy
    assert not marker.exists()


def test_url_checkpoint_loads(server):
    root, base, requests = server
    torch.save({'state_dict': WEIGHTS}, root / 'good.pth')
    checkpoint = load_checkpoint_file(f'{base}/good.pth')
    assert torch.equal(checkpoint['state_dict']['layers.0.weight'], WEIGHTS['layers.0.weight'])
    with local_checkpoint_policy():
        again = CheckpointLoader.load_checkpoint(f'{base}/good.pth', map_location='cpu')
    assert torch.equal(again['state_dict']['layers.0.weight'], WEIGHTS['layers.0.weight'])
    assert requests == ['/good.pth']


def test_missing_url_is_one_clear_error(server):
    _, base, _ = server
    with pytest.raises(InputError, match=re.escape(f"'{base}/none.pth' could not be "
                                                   'downloaded: HTTPError')):
        load_checkpoint_file(f'{base}/none.pth')


def test_policy_is_undone_on_exit():
    local, load_url = CheckpointLoader._schemes[''], mmengine_checkpoint.load_url
    with local_checkpoint_policy():
        assert CheckpointLoader._schemes[''] is not local
        assert mmengine_checkpoint.load_url is not load_url
    assert CheckpointLoader._schemes[''] is local
    assert mmengine_checkpoint.load_url is load_url
