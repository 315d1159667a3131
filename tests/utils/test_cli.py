"""The tools' shared entry point: the shared flags, scoped to the run, and
one line for the errors of the user's input (a traceback behind --debug)."""
import os

import pytest

from mmspatial.errors import InputError
from mmspatial.utils.cli import (ALLOW_PARTIAL_LOAD_ENV, TRUST_CHECKPOINT_ENV, run_tool,
                                 tool_parser, user_error_message)


def test_every_tool_parser_has_the_shared_flags():
    parser = tool_parser(description='a tool')
    parser.add_argument('config')
    args = parser.parse_args(['cfg.py', '--trust-checkpoint', '--allow-partial-load',
                              '--debug'])
    assert args.trust_checkpoint and args.allow_partial_load and args.debug
    assert '--trust-checkpoint' in parser.format_help()


def test_flags_are_in_force_during_the_run_only(monkeypatch):
    monkeypatch.delenv(TRUST_CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(ALLOW_PARTIAL_LOAD_ENV, raising=False)
    seen = {}

    def main():
        seen.update({name: os.environ.get(name)
                     for name in (TRUST_CHECKPOINT_ENV, ALLOW_PARTIAL_LOAD_ENV)})
        return 'done'

    assert run_tool(main, 'tool.py', ['x', '--trust-checkpoint']) == 'done'
    assert seen == {TRUST_CHECKPOINT_ENV: '1', ALLOW_PARTIAL_LOAD_ENV: None}
    assert TRUST_CHECKPOINT_ENV not in os.environ  # not left behind
    run_tool(main, 'tool.py', ['--allow-partial-load'])
    assert seen == {TRUST_CHECKPOINT_ENV: None, ALLOW_PARTIAL_LOAD_ENV: '1'}
    assert ALLOW_PARTIAL_LOAD_ENV not in os.environ


def _raise(error):
    def main():
        raise error
    return main


@pytest.mark.parametrize('error, line', [
    (InputError('config file not found: x.py'), 'config file not found: x.py'),
    (FileNotFoundError(2, 'No such file or directory', 'data/ann.json'),
     "No such file or directory: 'data/ann.json' (--debug shows the traceback)"),
    (PermissionError(13, 'Permission denied', '/work_dirs/run'),
     "Permission denied: '/work_dirs/run'"),
    (AssertionError('failed to load image: data/a.jpg'),
     'failed to load image: data/a.jpg (corrupt or not an image?)'),
    (TypeError("class `SpatialMamba` in mmspatial/models/backbones/spatial_mamba.py: "
               "SpatialMamba.__init__() got an unexpected keyword argument 'dpr'"),
     "SpatialMamba takes no argument 'dpr'"),
])
def test_errors_of_the_users_input_end_in_one_line(error, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool(_raise(error), '/x/tools/train.py', [])
    message = str(exit_.value.code)
    assert message.startswith('train.py: error: ') and line in message
    assert '\n' not in message


def test_debug_shows_the_traceback_and_bugs_keep_theirs():
    with pytest.raises(FileNotFoundError):
        run_tool(_raise(FileNotFoundError(2, 'No such file', 'a.json')), 'tool.py',
                 ['--debug'])
    with pytest.raises(InputError):
        run_tool(_raise(InputError('bad')), 'tool.py', ['--debug'])
    bug = KeyError('epoch')
    assert user_error_message(bug) is None
    with pytest.raises(KeyError):
        run_tool(_raise(bug), 'tool.py', [])


def test_only_the_known_third_party_warnings_are_silenced():
    import warnings

    def main():
        shown = []
        showwarning = warnings.showwarning
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        try:
            warnings.warn('pkg_resources is deprecated as an API. See ...', UserWarning)
            warnings.warn('a warning the user should read', UserWarning)
        finally:
            warnings.showwarning = showwarning
        return shown

    with warnings.catch_warnings():
        warnings.simplefilter('always')
        assert run_tool(main, 'tool.py', []) == ['a warning the user should read']
        assert len(main()) == 2  # outside the tools' entry point, nothing is hidden
