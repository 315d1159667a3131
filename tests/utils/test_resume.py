"""``--resume``: each way it can go wrong is one line, and a bare ``--resume``
with nothing to resume starts afresh with one warning naming the directory."""
import pytest

from mmspatial.errors import InputError, MissingFileError
from mmspatial.utils import check_training_state, checkpoint_to_resume

from ..conftest import warnings_in


def test_a_named_checkpoint_must_exist_and_hold_training_state(tmp_path):
    with pytest.raises(MissingFileError, match=r"--resume: checkpoint '.*nope.pth' "
                                               r'\(given on the command line\) does not exist'):
        checkpoint_to_resume(str(tmp_path), str(tmp_path / 'nope.pth'))
    weights = tmp_path / 'model.safetensors'
    weights.write_bytes(b'')
    with pytest.raises(InputError, match='is a .safetensors file, which holds weights only'):
        checkpoint_to_resume(str(tmp_path), str(weights))
    with pytest.raises(InputError, match=r"holds no training state \(no meta.epoch / "
                                         r'meta.iter'):
        check_training_state({'state_dict': {}}, 'released.pth')
    with pytest.raises(InputError, match=r'no meta.iter;'):
        check_training_state({'meta': {'epoch': 1}}, 'half.pth')
    check_training_state({'meta': {'epoch': 0, 'iter': 4}}, 'iter_4.pth')  # no error


def test_last_checkpoint_is_followed_and_checked(tmp_path):
    record = tmp_path / 'last_checkpoint'
    record.write_text('')
    with pytest.raises(InputError, match="last_checkpoint' is empty"):
        checkpoint_to_resume(str(tmp_path), 'auto')
    record.write_text(str(tmp_path / 'iter_2.pth'))
    with pytest.raises(MissingFileError, match=r"checkpoint '.*iter_2.pth' \(named by "
                                               r"'.*last_checkpoint'\) does not exist"):
        checkpoint_to_resume(str(tmp_path), 'auto')
    (tmp_path / 'iter_2.pth').write_bytes(b'x')
    assert checkpoint_to_resume(str(tmp_path), 'auto') == str(tmp_path / 'iter_2.pth')


def test_bare_resume_on_an_empty_work_dir_warns_and_starts_afresh(tmp_path, logged):
    assert checkpoint_to_resume(str(tmp_path), 'auto') is None
    warnings = warnings_in(logged)
    assert len(warnings) == 1 and repr(str(tmp_path)) in warnings[0]
    assert 'training starts from scratch' in warnings[0]
