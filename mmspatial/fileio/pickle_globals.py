"""The globals a pickle names, read off its opcodes without running any.

A pickle runs code only through the globals it names (a class to build, a
function to call); listing them is a parse of the opcode stream
(``pickletools.genops``), so a file can be judged before it is unpickled.
Names are given as ``module.name`` after the Python 2 renames that torch's
weights-only reader applies too (``__builtin__.set`` is ``builtins.set``).
"""
import pickletools

from torch._utils import IMPORT_MAPPING, NAME_MAPPING

_STRING_OPCODES = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE',
                   'STRING', 'BINSTRING', 'SHORT_BINSTRING'}
_GET_OPCODES = {'GET', 'BINGET', 'LONG_BINGET'}
_PUT_OPCODES = {'PUT', 'BINPUT', 'LONG_BINPUT'}


def global_name(module, name):
    """``module.name`` as torch's weights-only reader resolves it."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f'{module}.{name}'


def pickle_opcodes(file):
    """``(opcode name, argument)`` of one pickle read from ``file`` up to and
    including its STOP; raises ``ValueError`` where the bytes are no pickle."""
    return [(opcode.name, arg) for opcode, arg, _ in pickletools.genops(file)]


def globals_in(opcodes):
    """The globals named by a pickle's ``opcodes``, in order of appearance.

    ``GLOBAL``/``INST`` carry the name; for protocol 4's ``STACK_GLOBAL`` it is
    the last two strings pushed (also through the memo); a name that cannot be
    told is reported as ``'<unknown>'``, an extension code as such.
    """
    found, strings, memo, last = [], [], {}, None
    for name, arg in opcodes:
        pushed = None
        if name in ('GLOBAL', 'INST'):
            found.append(global_name(*arg.split(' ', 1)))
        elif name == 'STACK_GLOBAL':
            found.append(global_name(*strings[-2:]) if len(strings) >= 2 else '<unknown>')
        elif name in ('EXT1', 'EXT2', 'EXT4'):
            found.append(f'<copyreg extension {arg}>')
        elif name in _STRING_OPCODES:
            pushed = arg if isinstance(arg, str) else arg.decode('latin-1')
        elif name in _GET_OPCODES:
            pushed = memo.get(arg)
        elif name in _PUT_OPCODES:
            memo[arg] = last
        elif name == 'MEMOIZE':
            memo[len(memo)] = last
        if pushed is not None:
            strings.append(pushed)
        if name not in _PUT_OPCODES and name != 'MEMOIZE':
            last = pushed
    return list(dict.fromkeys(found))
