"""Writing an exportable module as ONNX, and checking the file with onnxruntime.

torch's TorchScript-based exporter (``dynamo=False``) traces the module; the
structure-aware SSM is traced through its exportable form
(``mmspatial.ops.structure_aware_ssm.export``), whose scan is two ONNX
``Loop`` nodes sized in the graph from the input. A dynamic file (the default)
takes any batch size, height and width; a fixed one the traced shape only.
Both have the same operators, and a graph that does not grow with the image.
"""
import io
import warnings
from importlib import import_module

import torch

from mmspatial.fileio import atomic_write

OPSET = 17
INSTALL_HINT = 'ONNX export needs onnx and onnxruntime: pip install -e ".[deploy]"'
INPUT_NAME = 'images'
DYNAMIC_AXES = {0: 'batch', 2: 'height', 3: 'width'}


def _require(module_name):
    try:
        return import_module(module_name)
    except ImportError as error:
        raise ImportError(f'{INSTALL_HINT} ({error})') from error


def _quiet_exporter():
    """Silence what the exporter says that does not concern the user: the
    tracer's notes on Python values taken from shapes (input checks, branches
    on sizes; the three-size check tells whether the graph holds at other
    sizes), the deprecation of the TorchScript-based exporter this module
    chooses, and the constant folder's skipped strided slices."""
    warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
    for message in ('You are using the legacy TorchScript-based ONNX export',
                    'The feature will be removed',
                    'Constant folding - Only steps=1 can be constant folded'):
        warnings.filterwarnings('ignore', message=message)


def output_names(module, inputs):
    """Names of the module's outputs: its ``output_name``, numbered when it
    returns a tuple (``feat0``, ``feat1``, ...)."""
    outputs = module(inputs)
    if isinstance(outputs, (tuple, list)):
        return [f'{module.output_name}{i}' for i in range(len(outputs))]
    return [module.output_name]


def export_onnx(module, shape, out_file, batch_size=1, opset=OPSET, metadata=None,
                dynamic=False):
    """Write ``module`` (from ``build_exportable``) to ``out_file``.

    Args:
        shape (tuple[int, int]): input height and width the module is traced
            at (the only one a fixed file takes).
        batch_size (int): images per call when tracing (fixed file: always).
        metadata (dict[str, str] | None): stored in the model's metadata.
        dynamic (bool): batch size, height and width as named dimensions of
            the input and outputs (``batch``, ``height``, ``width``), so that
            the file takes any of them.

    Returns:
        list[str]: the graph's output names; the input is named ``images``.
    """
    onnx = _require('onnx')
    height, width = shape
    inputs = torch.zeros(batch_size, 3, height, width)
    with torch.no_grad():
        names = output_names(module, inputs)
        dynamic_axes = None
        if dynamic:
            # outputs: batch first, every other dimension as the exporter infers it
            dynamic_axes = {INPUT_NAME: DYNAMIC_AXES,
                            **{name: {0: 'batch'} for name in names}}
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            _quiet_exporter()
            torch.onnx.export(module, (inputs,), buffer, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=names, dynamic_axes=dynamic_axes)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    with atomic_write(out_file) as file:
        file.write(model.SerializeToString())
    return names


def check_shapes(shape, divisor=1):
    """The three input sizes a dynamic file is checked at: ``shape`` (the
    traced one), a larger one and a non-square one, all multiples of
    ``divisor`` when ``shape`` is."""
    def up(size):
        return -(-size // divisor) * divisor

    height, width = shape
    larger = (up(height + height // 4 + 1), up(width + width // 4 + 1))
    other = (height, up(width + width // 2 + 1)) if height == width else (width, height)
    return [tuple(shape), larger, other]


def onnx_session(onnx_file, threads=None, optimization='all'):
    """An onnxruntime CPU session of ``onnx_file`` (``threads``: intra-op
    threads, None for onnxruntime's default; ``optimization``: ``'all'`` or
    ``'basic'`` graph optimisations).

    With ``threads`` given (for timing side by side with other work) its
    threads sleep between runs: onnxruntime's default spin-wait after each run
    takes the cores from whatever runs next.
    """
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.graph_optimization_level = {
        'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    return ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])


def compare_with_onnxruntime(module, onnx_file, inputs, session=None):
    """Largest difference between onnxruntime (CPU) and PyTorch on ``inputs``,
    per output, relative to the largest absolute value of PyTorch's output.

    Args:
        session: an onnxruntime session of ``onnx_file`` to reuse (None: a new one).

    Returns:
        dict[str, float]: output name -> max|onnx - torch| / max|torch|.
    """
    session = session or onnx_session(onnx_file)
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, {session.get_inputs()[0].name: inputs.numpy()})
    with torch.no_grad():
        expected = module(inputs)
    if not isinstance(expected, (tuple, list)):
        expected = (expected,)
    errors = {}
    for name, got, want in zip(names, results, expected):
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f'{onnx_file}: output {name} has shape {got.shape}, PyTorch '
                             f'{tuple(want.shape)} (inputs {tuple(inputs.shape)})')
        scale = want.abs().max().item()
        diff = (torch.from_numpy(got) - want).abs().max().item()
        errors[name] = diff / scale if scale > 0 else diff
    return errors
