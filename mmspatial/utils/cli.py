"""The command-line entry of the tools: bad input ends in one line, not a traceback."""
import os.path as osp
import sys

from ..errors import InputError


def run_tool(main, script):
    """Call ``main()``; an :class:`~mmspatial.errors.InputError` (a config, data
    root or checkpoint that cannot be used) exits with ``<script>: error: ...``."""
    try:
        return main()
    except InputError as error:
        sys.exit(f'{osp.basename(script)}: error: {error}')
