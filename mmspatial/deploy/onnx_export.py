"""Writing an exportable module as ONNX, and checking the file with onnxruntime.

torch's TorchScript-based exporter (``dynamo=False``) traces the module; the
structure-aware SSM is traced through its exportable form
(``mmspatial.ops.structure_aware_ssm_export``). The graph has the static input
shape it was exported at: the scan's chunk layout depends on the image size.
"""
from importlib import import_module

import torch

OPSET = 17
INSTALL_HINT = 'ONNX export needs onnx and onnxruntime: pip install -e ".[deploy]"'


def _require(module_name):
    try:
        return import_module(module_name)
    except ImportError as error:
        raise ImportError(f'{INSTALL_HINT} ({error})') from error


def output_names(module, inputs):
    """Names of the module's outputs: its ``output_name``, numbered when it
    returns a tuple (``feat0``, ``feat1``, ...)."""
    outputs = module(inputs)
    if isinstance(outputs, (tuple, list)):
        return [f'{module.output_name}{i}' for i in range(len(outputs))]
    return [module.output_name]


def export_onnx(module, shape, out_file, batch_size=1, opset=OPSET, metadata=None):
    """Write ``module`` (from ``build_exportable``) to ``out_file``.

    Args:
        shape (tuple[int, int]): input height and width, fixed in the graph.
        batch_size (int): images per call, fixed in the graph.
        metadata (dict[str, str] | None): stored in the model's metadata.

    Returns:
        list[str]: the graph's output names; the input is named ``images``.
    """
    onnx = _require('onnx')
    height, width = shape
    inputs = torch.zeros(batch_size, 3, height, width)
    with torch.no_grad():
        names = output_names(module, inputs)
        torch.onnx.export(module, (inputs,), out_file, dynamo=False, opset_version=opset,
                          input_names=['images'], output_names=names)
    model = onnx.load(out_file)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    onnx.save(model, out_file)
    return names


def compare_with_onnxruntime(module, onnx_file, inputs):
    """Largest difference between onnxruntime (CPU) and PyTorch on ``inputs``,
    per output, relative to the largest absolute value of PyTorch's output.

    Returns:
        dict[str, float]: output name -> max|onnx - torch| / max|torch|.
    """
    ort = _require('onnxruntime')
    session = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
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
