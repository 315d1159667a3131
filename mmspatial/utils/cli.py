"""The command-line entry of the tools: their shared flags and their error path.

Every tool builds its parser with :func:`tool_parser` and runs its ``main``
through :func:`run_tool`, so that every tool has the same three flags:

``--trust-checkpoint``
    read checkpoints that pickle objects besides tensors (code in them runs);
``--allow-partial-load``
    load a checkpoint that does not fit the whole model, with warnings;
``--debug``
    show the traceback of an error instead of its one line.

Bad input ends in one line, ``<tool>: error: ...``: an
:class:`~mmspatial.errors.InputError` (a config, data root or checkpoint that
cannot be used), and the errors that the user's data raises inside the Runner
(a missing or unreadable file, a corrupt image, a config entry that the
model does not take). Any other exception is a bug and keeps its traceback.
"""
import argparse
import os
import os.path as osp
import re
import sys
import warnings
from contextlib import contextmanager

from ..errors import InputError
from ..fileio.checkpoint_reader import TRUST_ENV as TRUST_CHECKPOINT_ENV
from ..models.whole_model_check import ALLOW_PARTIAL_LOAD_ENV

# Third-party warnings that tell a user of the tools nothing they can act on,
# as (message regex, category name): mmengine 0.10.7 and mmdet import
# pkg_resources; torch's ONNX exporter warns about every traced shape and
# every Slice it cannot fold.
KNOWN_WARNINGS = (
    (r'pkg_resources is deprecated as an API', 'UserWarning'),
    (r'', 'TracerWarning'),
    (r'Constant folding - Only steps=1 can be constant folded', 'UserWarning'),
)


def add_shared_arguments(parser):
    """Add the flags every tool has to ``parser``; returns the parser."""
    group = parser.add_argument_group('shared by the mmspatial tools')
    group.add_argument(
        '--trust-checkpoint', action='store_true',
        help='read checkpoints that hold pickled objects besides tensors and '
        'the types released checkpoints need (the code they carry runs: only for '
        f'files you trust; the environment variable {TRUST_CHECKPOINT_ENV}=1 does '
        'the same); see docs/checkpoints.md')
    group.add_argument(
        '--allow-partial-load', action='store_true',
        help='load a checkpoint that does not fit the whole model (other heads, '
        'missing keys, non-finite weights) with warnings instead of refusing it '
        f'(or {ALLOW_PARTIAL_LOAD_ENV}=1)')
    group.add_argument('--debug', action='store_true',
                       help='on an error, show the whole traceback')
    return parser


def tool_parser(**kwargs):
    """An ``argparse.ArgumentParser(**kwargs)`` with the shared flags."""
    return add_shared_arguments(argparse.ArgumentParser(**kwargs))


def shared_flags(argv):
    """The shared flags found in ``argv`` (other arguments are ignored)."""
    flags, _ = add_shared_arguments(argparse.ArgumentParser(add_help=False)) \
        .parse_known_args(argv)
    return flags


@contextmanager
def applied_flags(flags):
    """Inside the block the flags are in force, through their environment
    variables (so that the processes of a distributed launch see them too);
    the variables are restored on the way out."""
    settings = {TRUST_CHECKPOINT_ENV: flags.trust_checkpoint,
                ALLOW_PARTIAL_LOAD_ENV: flags.allow_partial_load}
    saved = {name: os.environ.get(name) for name in settings}
    for name, on in settings.items():
        if on:
            os.environ[name] = '1'
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def known_warnings_silenced():
    """Inside the block the :data:`KNOWN_WARNINGS`, and only those, are not
    shown."""
    with warnings.catch_warnings():
        for message, category in KNOWN_WARNINGS:
            if category == 'TracerWarning':
                from torch.jit import TracerWarning as category_class
            else:
                category_class = UserWarning
            warnings.filterwarnings('ignore', message=message, category=category_class)
        yield


def user_error_message(error):
    """One line for an error caused by the user's input, or None for a bug."""
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, ModuleNotFoundError):  # an optional dependency
        return f'{error} (the pinned versions are in requirements/*.txt)'
    if isinstance(error, OSError) and error.filename is not None:
        # missing annotation file, unwritable work dir, a folder for a file ...
        reason = error.strerror or type(error).__name__
        return f'{reason}: {os.fsdecode(error.filename)!r}'
    text = str(error).strip()
    if isinstance(error, AssertionError) and text.startswith('failed to load image'):
        return f'{text} (corrupt or not an image?)'  # mmcv's LoadImageFromFile
    keyword = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'",
                        text)
    if isinstance(error, TypeError) and keyword:
        cls, name = keyword.groups()
        return (f'{cls} takes no argument {name!r}: a config entry or '
                f'--cfg-options key it does not know (a typo?)')
    return None


def run_tool(main, script, argv=None):
    """Call ``main()`` with the shared flags of ``argv`` (default
    ``sys.argv[1:]``) in force; an error of the user's input exits with
    ``<script>: error: ...``, unless ``--debug`` asks for the traceback."""
    flags = shared_flags(sys.argv[1:] if argv is None else argv)
    name = osp.basename(script)
    with applied_flags(flags), known_warnings_silenced():
        if flags.trust_checkpoint:
            print(f'{name}: --trust-checkpoint: checkpoints may run the code they '
                  'pickle; only use files you trust', file=sys.stderr)
        try:
            return main()
        except Exception as error:  # noqa: BLE001 (re-raised unless it is the user's)
            message = None if flags.debug else user_error_message(error)
            if message is None:
                raise
            hint = '' if isinstance(error, InputError) else ' (--debug shows the traceback)'
            sys.exit(f'{name}: error: {message}{hint}')
