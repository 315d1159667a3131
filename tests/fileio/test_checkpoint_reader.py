"""The checkpoint reader: nothing from a file runs unless the user opts in,
the files the project meets load without a warning, a corrupted zip
checkpoint is refused before use, and ``.safetensors`` files round-trip."""
import importlib.util
import os
import pickle
import re
import zipfile
from collections import OrderedDict

import pytest
import torch
from mmengine.logging import HistoryBuffer

from mmspatial.errors import InputError
from mmspatial.fileio import checkpoint_globals
from mmspatial.fileio.checkpoint_reader import (TRUST_ENV, checkpoint_trusted,
                                                unlisted_globals)
from mmspatial.fileio.safetensors_checkpoint import save_safetensors
from mmspatial.models.checkpoint import check_resumable, load_checkpoint_file

from ..conftest import warnings_in
from .checkpoint_files import (ExecOnLoad, TouchOnLoad, hostile,
                               save_released_classifier, save_runner_checkpoint)

WEIGHTS = {'layers.0.weight': torch.arange(6.).reshape(2, 3)}


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


# ----------------------------------------------------------------- refused

@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
@pytest.mark.parametrize('payload, named', [(TouchOnLoad, 'pathlib.Path'),
                                            (ExecOnLoad, 'builtins.exec')],
                         ids=['Path.touch', 'exec'])
def test_hostile_checkpoint_is_refused_before_it_runs(tmp_path, payload, named, zip_format):
    path, marker = tmp_path / 'hostile.pth', tmp_path / 'ran'
    torch.save(hostile(WEIGHTS, marker, payload), path,
               _use_new_zipfile_serialization=zip_format)
    assert named in unlisted_globals(str(path))
    with pytest.raises(InputError) as error:
        load_checkpoint_file(path)
    message = str(error.value)
    assert re.search(f"checkpoint '{re.escape(str(path))}' refused: it names .*{named}",
                     message)
    assert f'{TRUST_ENV}=1' in message and '--trust-checkpoint' in message
    assert not marker.exists()


def test_plain_pickle_is_refused_even_when_trusted(tmp_path, monkeypatch):
    """Not a torch.save file: nothing can read it as a checkpoint, so it is
    refused whatever the opt-in, naming what it asked for."""
    path, marker = tmp_path / 'raw.pkl', tmp_path / 'ran'
    path.write_bytes(pickle.dumps({'weights': TouchOnLoad(marker)}))  # protocol 5
    for trusted in ('0', '1'):
        monkeypatch.setenv(TRUST_ENV, trusted)
        with pytest.raises(InputError, match=f"'{re.escape(str(path))}' is not a PyTorch "
                           "checkpoint but a plain pickle.*pathlib.Path"):
            load_checkpoint_file(path)
    assert not marker.exists()


def test_getattr_resolves_to_history_buffer_statistics_only(tmp_path):
    """``builtins.getattr`` is on the list for mmengine's HistoryBuffer; any
    other lookup through it is refused while reading."""

    class LooksUpAttribute:
        def __reduce__(self):
            return getattr, (OrderedDict, 'fromkeys')

    path = tmp_path / 'getattr.pth'
    torch.save({'state_dict': WEIGHTS, 'meta': LooksUpAttribute()}, path)
    assert unlisted_globals(str(path)) == []
    with pytest.raises(InputError, match=r"refused while reading: builtins.getattr"
                       r"\(OrderedDict, 'fromkeys'\) is refused"):
        load_checkpoint_file(path)
    assert checkpoint_globals.history_buffer_statistic(HistoryBuffer, 'mean') is \
        HistoryBuffer.mean


def test_history_buffer_brings_no_statistics_method_of_its_own(tmp_path):
    """mmengine registers a buffer's pickled statistics methods on the class,
    for every buffer: only its own four are taken."""
    buffer = HistoryBuffer()
    buffer.update(1.0)
    path = tmp_path / 'buffer.pth'
    methods = HistoryBuffer._statistics_methods
    original = dict(methods)
    methods['mean'] = OrderedDict  # an allowed global, in the wrong place
    try:
        torch.save({'message_hub': {'log_scalars': {'loss': buffer}}}, path)
    finally:
        methods.clear()
        methods.update(original)
    with pytest.raises(InputError, match=r'statistics methods of its own \(mean\)'):
        load_checkpoint_file(path)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


def test_the_list_holds_no_generic_callable():
    import builtins
    generic = {builtins.getattr, builtins.eval, builtins.exec, builtins.__import__,
               builtins.compile, builtins.open, builtins.setattr, os.system}
    for obj, name in checkpoint_globals.allowed_globals():
        assert obj not in generic, name
        assert name.split('.')[0] not in ('os', 'posix', 'nt', 'sys', 'subprocess',
                                          'shutil', 'importlib'), name
    assert dict((n, o) for o, n in checkpoint_globals.allowed_globals())[
        'builtins.getattr'] is checkpoint_globals.history_buffer_statistic


def test_trusted_opt_in_reads_the_file_and_says_so(tmp_path, monkeypatch, logged):
    path, marker = tmp_path / 'hostile.pth', tmp_path / 'ran'
    torch.save(hostile(WEIGHTS, marker), path)
    assert not checkpoint_trusted()
    with pytest.raises(InputError, match='refused'):
        load_checkpoint_file(path)
    assert not marker.exists() and not warnings_in(logged)

    monkeypatch.setenv(TRUST_ENV, '1')
    assert checkpoint_trusted()
    checkpoint = load_checkpoint_file(path)
    assert marker.exists()  # the opt-in ran the (harmless) payload
    assert torch.equal(checkpoint['state_dict']['backbone.layers.0.weight'],
                       WEIGHTS['layers.0.weight'])
    warnings = warnings_in(logged)
    assert len(warnings) == 1
    assert str(path) in warnings[0] and 'full pickle' in warnings[0]
    assert 'pathlib.Path' in warnings[0]


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / 'scripted.pth'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(InputError, match='TorchScript archive'):
        load_checkpoint_file(path)


def test_directory_is_an_error(tmp_path):
    with pytest.raises(InputError, match='is a directory'):
        load_checkpoint_file(tmp_path)


# -------------------------------------------------------- loaded, silently

def test_released_classifier_with_yacs_config_loads_without_warning(tmp_path, logged):
    path = tmp_path / 'spatialmamba_t.pth'
    save_released_classifier(WEIGHTS, path, tmp_path)
    assert importlib.util.find_spec('yacs') is None  # gone again, as for users
    assert unlisted_globals(str(path)) == []
    checkpoint = load_checkpoint_file(str(path))
    assert torch.equal(checkpoint['model']['layers.0.weight'], WEIGHTS['layers.0.weight'])
    config = checkpoint['config']
    assert type(config) is OrderedDict and config['MODEL']['NAME'] == 'tiny'
    assert config['TRAIN']['OPTIMIZER']['NAME'] == 'adamw'
    assert checkpoint['max_accuray_ema'] == 82.7 and 'exp_avg' in str(checkpoint['optimizer'])
    assert not warnings_in(logged)


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    return save_runner_checkpoint(tmp_path_factory.mktemp('runner'))


def test_runner_checkpoint_loads_without_warning(runner_checkpoint, logged):
    checkpoint = load_checkpoint_file(runner_checkpoint)
    scalars = checkpoint['message_hub']['log_scalars']
    assert scalars and all(type(b) is HistoryBuffer for b in scalars.values())
    assert scalars['train/loss'].mean() == pytest.approx(
        scalars['train/loss'].data[0].mean())  # the statistics methods came back
    assert checkpoint['meta']['dataset_meta']['classes'] == ('circle', 'square')
    assert 'random_states' in checkpoint['meta']
    assert not warnings_in(logged)


def test_legacy_format_file_loads_weights_only(tmp_path, logged):
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': WEIGHTS, 'meta': {'epoch': 3}}, path,
               _use_new_zipfile_serialization=False)
    checkpoint = load_checkpoint_file(path)
    assert torch.equal(checkpoint['state_dict']['layers.0.weight'], WEIGHTS['layers.0.weight'])
    assert not warnings_in(logged)


# ---------------------------------------------------------------- integrity

def flip_byte_in_entry(path, entry_suffix):
    """Flip one byte in the middle of the zip entry whose name ends with
    ``entry_suffix``; the entry's name."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry_suffix))
    data = bytearray(path.read_bytes())
    name_length, extra_length = (int.from_bytes(data[info.header_offset + at:
                                                     info.header_offset + at + 2], 'little')
                                 for at in (26, 28))
    start = info.header_offset + 30 + name_length + extra_length
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return info.filename


def test_corrupted_tensor_data_is_refused_before_use(tmp_path):
    path = tmp_path / 'model.pth'
    weight = torch.randn(64, 64)
    torch.save({'state_dict': {'weight': weight}}, path)
    entry = flip_byte_in_entry(path, 'data/0')
    corrupted = torch.load(path, weights_only=True)['state_dict']['weight']
    assert not torch.equal(corrupted, weight)  # torch.load itself takes it
    with pytest.raises(InputError, match=re.escape(f"checkpoint '{path}' is corrupted: "
                                                   f"the bytes of its entry {entry}")):
        load_checkpoint_file(path)


# --------------------------------------------------------------- safetensors

def test_safetensors_round_trip(tmp_path):
    path = tmp_path / 'weights.safetensors'
    meta = dict(arch='tiny', dataset_meta=dict(classes=['a', 'b']))
    save_safetensors({'state_dict': WEIGHTS, 'meta': meta}, path)
    checkpoint = load_checkpoint_file(path)
    assert set(checkpoint) == {'state_dict', 'meta'} and checkpoint['meta'] == meta
    assert torch.equal(checkpoint['state_dict']['layers.0.weight'], WEIGHTS['layers.0.weight'])
    save_safetensors({'state_dict': WEIGHTS}, path)  # replaced, without meta
    assert set(load_checkpoint_file(str(path))) == {'state_dict'}


def test_safetensors_cannot_resume(tmp_path):
    with pytest.raises(InputError, match=r'--resume .* \.safetensors file, which holds '
                       'weights only'):
        check_resumable(tmp_path / 'weights.safetensors')
    check_resumable(tmp_path / 'iter_2.pth')
