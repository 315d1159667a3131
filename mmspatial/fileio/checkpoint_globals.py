"""The Python objects a checkpoint may name, and what each name is read as.

``torch.load(weights_only=True)`` builds tensors, containers and numbers, and
refuses every other global a pickle names. Released Spatial-Mamba checkpoints
and mmengine's own name a few more; this module lists them, by their exact
``module.name``:

* mmengine Runner checkpoints (``meta`` and ``message_hub``): numpy arrays,
  scalars and dtypes (``numpy.dtype`` and the classes of its instances), and
  mmengine's ``HistoryBuffer``. A ``HistoryBuffer`` pickles its statistics
  methods (``HistoryBuffer.mean`` and three more) as
  ``builtins.getattr(HistoryBuffer, 'mean')``: that name resolves to
  :func:`history_buffer_statistic`, which returns those four methods and
  refuses any other lookup, and the buffer is rebuilt by
  :class:`HistoryBufferReader`, which takes no other statistics method
  (mmengine would register it on the class, for every buffer).
* the reference classifier trainer's ``config``: a yacs ``CfgNode``. yacs is
  not a dependency, and the class is never imported: the name resolves to
  :class:`CfgNodeAsDict`, which reads the node as an ``OrderedDict`` of its
  values (torch's weights-only reader fills only exact dicts).

Nothing on the list runs code named by the file: no ``eval``/``exec``, no
``os``/``subprocess``, no generic ``getattr``/``__import__``.
"""
import pickle
from collections import OrderedDict

import numpy as np
from mmengine.logging import HistoryBuffer

#: The statistics methods ``HistoryBuffer`` pickles with its state.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(owner, name):
    """``builtins.getattr`` as a checkpoint may use it: ``HistoryBuffer``'s
    statistics methods, and nothing else."""
    if owner not in (HistoryBuffer, HistoryBufferReader) or (
            name not in HISTORY_BUFFER_STATISTICS):
        raise pickle.UnpicklingError(
            f'builtins.getattr({getattr(owner, "__name__", type(owner).__name__)}, '
            f'{name!r}) is refused: a checkpoint may only look up '
            f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_STATISTICS)}}}')
    return getattr(HistoryBuffer, name)


class HistoryBufferReader(HistoryBuffer):
    """How a pickled mmengine ``HistoryBuffer`` is rebuilt: its state is
    checked, then it becomes a plain ``HistoryBuffer``."""

    def __setstate__(self, state):
        methods = state.get('statistics_methods', {})
        if not isinstance(methods, dict):
            raise pickle.UnpicklingError('a HistoryBuffer in the checkpoint has '
                                         'statistics_methods that are no dict')
        foreign = [str(name) for name, method in methods.items()
                   if name not in HISTORY_BUFFER_STATISTICS
                   or method is not getattr(HistoryBuffer, name)]
        if foreign:
            raise pickle.UnpicklingError(
                'a HistoryBuffer in the checkpoint brings statistics methods of '
                f'its own ({", ".join(foreign)}): refused')
        self.__class__ = HistoryBuffer
        HistoryBuffer.__setstate__(self, state)


class CfgNodeAsDict:
    """What a pickled yacs ``CfgNode`` is read as: an ``OrderedDict`` of its
    keys and values (nested nodes likewise); yacs's own flags, such as
    ``__immutable__``, end up as attributes of the dict."""

    def __new__(cls, *args):
        return OrderedDict()


def allowed_globals():
    """Every global a checkpoint may name besides torch's own, as the
    ``(object, 'module.name')`` pairs ``torch.serialization.safe_globals``
    takes."""
    multiarray = np._core.multiarray
    pairs = [
        (HistoryBufferReader, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (history_buffer_statistic, 'builtins.getattr'),
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
        (CfgNodeAsDict, 'yacs.config.CfgNode'),
    ]
    # a pickled dtype is rebuilt by np.dtype(...), then given its state: the
    # instance is of one of these classes, which must be allowed to take it
    pairs += [(cls, f'numpy.dtypes.{cls.__name__}') for cls in vars(np.dtypes).values()
              if isinstance(cls, type) and issubclass(cls, np.dtype)]
    # numpy 2 pickles from numpy._core, files of numpy 1 name numpy.core
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        pairs += [(multiarray._reconstruct, f'{module}._reconstruct'),
                  (multiarray.scalar, f'{module}.scalar')]
    return pairs
