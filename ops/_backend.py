"""Choosing the implementation an operator runs with: ``'triton'``, ``'torch'``
or ``'export'``.

Order of precedence: while ``torch.onnx.export`` traces, ``'export'`` (the
form ONNX can hold, ``structure_aware_ssm`` only); then the ``backend=``
argument, then the environment variable ``MMSPATIAL_OPS_BACKEND``, then
automatic choice (Triton for CUDA tensors when Triton imports, PyTorch
otherwise). The first call of each operator logs which backend runs and why,
once per (operator, backend) pair.

:data:`IMPLEMENTATIONS` is the one table of what runs: operator -> backend ->
the function, imported from its module under ``ops`` when first chosen (so
Triton is imported only when a Triton backend runs).
"""
import importlib
import logging
import os
from functools import lru_cache

import torch

ENV_VAR = 'MMSPATIAL_OPS_BACKEND'
BACKENDS = ('triton', 'torch', 'export')
IMPLEMENTATIONS = {
    'selective_scan': {
        'triton': 'selective_scan.triton_backend:selective_scan_triton',
        'torch': 'selective_scan.torch_backend:selective_scan_torch',
    },
    'state_fusion': {
        'triton': 'state_fusion.triton_backend:state_fusion_triton',
        'torch': 'state_fusion.torch_backend:state_fusion_torch',
    },
    'structure_aware_ssm': {
        'triton': 'structure_aware_ssm.triton_backend:structure_aware_ssm_triton',
        'torch': 'structure_aware_ssm.torch_backend:structure_aware_ssm_torch',
        'export': 'structure_aware_ssm.export:structure_aware_ssm_export',
    },
}
"""Operator -> backend -> ``'module:function'``, the module relative to ``ops``.
Every implementation takes the arguments of the operator's ``*_ref``, in order."""
EXPORTABLE = tuple(op for op, table in IMPLEMENTATIONS.items() if 'export' in table)
"""The operators with an ``'export'`` form."""
_logged = set()
_loaded = {}


@lru_cache(maxsize=1)
def triton_import_error():
    """``None`` when Triton imports, else the reason it does not (a string)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as error:  # any failure of an optional dependency
        return f'{type(error).__name__}: {error}'
    return None


def triton_interpreter_enabled():
    """True when ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors."""
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


def log_once(op_name, backend, reason):
    """Log which backend an operator runs, once per (operator, backend)."""
    log_message_once((op_name, backend),
                     f'mmspatial.ops.{op_name}: using the {backend} backend ({reason})')


def log_message_once(key, message):
    """Log ``message`` the first time ``key`` is seen, through mmengine's current
    logger when present, else ``logging``."""
    if key in _logged:
        return
    _logged.add(key)
    try:
        from mmengine.logging import print_log
    except ImportError:
        logging.getLogger('mmspatial.ops').warning(message)
    else:
        print_log(message, logger='current', level=logging.INFO)


def resolve_backend(op_name, requested, device):
    """Return the backend (``'triton'``, ``'torch'`` or ``'export'``) for one call.

    Args:
        op_name (str): operator name, for the log line.
        requested (str | None): the caller's ``backend=`` argument.
        device (torch.device): device of the operator's inputs.
    """
    if torch.onnx.is_in_onnx_export():
        requested = 'export'
        source = 'torch.onnx.export is tracing'
    else:
        source = 'backend= argument'
    if requested is None and os.environ.get(ENV_VAR):
        requested, source = os.environ[ENV_VAR], f'{ENV_VAR}'
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f'{op_name}: unknown backend {requested!r} '
                             f'(from {source}); choose one of {BACKENDS}')
        if requested == 'export' and op_name not in EXPORTABLE:
            raise ValueError(f'{op_name}: no form ONNX can hold (from {source}); '
                             f'only {EXPORTABLE} has one: export the model whose '
                             'layers call it')
        if requested == 'triton':
            error = triton_import_error()
            if error is not None:
                raise RuntimeError(f'{op_name}: backend "triton" was requested '
                                   f'({source}) but Triton does not import: {error}')
            if device.type != 'cuda' and not triton_interpreter_enabled():
                raise RuntimeError(
                    f'{op_name}: backend "triton" was requested ({source}) for '
                    f'{device.type} tensors; Triton runs CUDA tensors, or CPU '
                    'tensors under TRITON_INTERPRET=1')
        log_once(op_name, requested, f'requested by {source}')
        return requested
    if device.type == 'cuda':
        error = triton_import_error()
        if error is None:
            log_once(op_name, 'triton', 'CUDA tensors and Triton is available')
            return 'triton'
        log_once(op_name, 'torch', f'CUDA tensors but Triton is unavailable: {error}')
        return 'torch'
    log_once(op_name, 'torch', f'{device.type} tensors')
    return 'torch'


def implementation(op_name, requested, device):
    """The function that runs ``op_name`` for one call: the backend
    :func:`resolve_backend` chooses, looked up in :data:`IMPLEMENTATIONS`."""
    backend = resolve_backend(op_name, requested, device)
    key = (op_name, backend)
    if key not in _loaded:
        module, name = IMPLEMENTATIONS[op_name][backend].split(':')
        _loaded[key] = getattr(importlib.import_module(f'{__package__}.{module}'), name)
    return _loaded[key]
