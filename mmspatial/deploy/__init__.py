"""Deployment: the task models of this project's configs as ONNX graphs.

``build_exportable`` turns a config (and checkpoint) into a module of one image
tensor; ``export_onnx`` writes it and ``compare_with_onnxruntime`` runs the file
against PyTorch. ``tools/deployment/export_onnx.py`` is the command line.
"""
from .exportable import build_exportable, load_export_config, pad_size_divisor
from .onnx_export import check_shapes, compare_with_onnxruntime, export_onnx

__all__ = ['build_exportable', 'load_export_config', 'pad_size_divisor', 'export_onnx',
           'check_shapes', 'compare_with_onnxruntime']
