"""Registration of the PyTorch-path kernels as ``torch.library`` custom ops.

Each operator of the ``'torch'`` backend is a ``torch.autograd.Function`` with a
stable class name (``SelectiveScanTorchFn``, ``StateFusionTorchFn``,
``StructureAwareSSMTorchFn``; FLOP counters see ``prim::PythonOp.<name>``) whose
forward and backward call the custom ops registered here. ``torch.compile`` then
treats the kernels as opaque calls with fake (shape-only) implementations: their
chunk loops and data-dependent fallbacks are never traced. Outside
``torch.compile`` the functions run directly (:func:`eager_or_op` for the
forwards; :func:`op_or_gradients` for the backwards, which return their
gradients without the custom ops' copies into input-shaped buffers): the
custom op's Python dispatch costs a noticeable share of a small stage's op
(benchmarks/RESULTS.md).
"""
import torch

NAMESPACE = 'mmspatial'
_EAGER_FUNCTIONS = {}


def custom_op(name, fake):
    """Register ``fn`` as ``torch.ops.mmspatial.<name>`` with the fake kernel ``fake``.

    When the op already exists (this package imported under two module names,
    ``ops`` and ``mmspatial.ops``) the existing registration is returned: both
    copies of the module hold the same code.
    """
    def register(fn):
        namespace = getattr(torch.ops, NAMESPACE)
        if hasattr(namespace, name):
            return getattr(namespace, name)
        op = torch.library.custom_op(f'{NAMESPACE}::{name}', mutates_args=())(fn)
        op.register_fake(fake)
        _EAGER_FUNCTIONS[op] = fn
        return op
    return register


def eager_or_op(op):
    """The custom op while ``torch.compile`` traces, else the function it wraps."""
    if torch.compiler.is_compiling():
        return op
    return _EAGER_FUNCTIONS.get(op, op)


def op_or_gradients(op, gradients, device):
    """A backward custom op while ``torch.compile`` traces, else ``gradients``
    (no autocast): the same gradients as computed, without the op's copies into
    input-shaped buffers; autograd casts them to the inputs' dtypes."""
    if torch.compiler.is_compiling():
        return op

    def run(*args):
        with no_autocast(device):
            return gradients(*args)
    return run


def compute_dtype(*tensors):
    """float64 when any input is float64, else float32 (the accumulation dtype)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def no_autocast(device):
    """Context that disables autocast: the kernels choose their own dtypes.

    Custom ops fall through the autocast dispatch keys, so without this the
    convolutions inside would run in the autocast dtype.
    """
    return torch.autocast(device_type=device.type, enabled=False)

