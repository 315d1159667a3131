"""The part of each task model that is exported, as a module of one tensor.

Input: the normalised image batch (batch, 3, H, W), as the model's data
preprocessor makes it (mean/std, channel order and padding stay outside the
graph, as in mmdeploy). Outputs:

* mmpretrain classifier: the logits (batch, num_classes);
* mmseg encoder-decoder (UperNet): the per-pixel class scores (batch,
  num_classes, H, W), the decode head's logits resized to the input as
  ``EncoderDecoder.encode_decode`` does (no auxiliary head, no argmax);
* mmdet detector: the backbone + neck features (the FPN levels). Region
  proposals, RoI heads and NMS are mmdeploy's domain.
"""
import torch
import torch.nn as nn

from mmspatial.models.checkpoint import load_checkpoint_file
from mmspatial.models.whole_model_check import load_model_checkpoint
from mmspatial.utils import build_model, load_config


class _ExportedPart(nn.Module):
    """Wraps a task model; ``forward`` maps the image batch to the exported
    outputs, named after ``output_name`` in the ONNX file."""

    output_name = None

    def __init__(self, model):
        super().__init__()
        self.model = model


class ClassifierLogits(_ExportedPart):
    """An mmpretrain ``ImageClassifier``: images -> logits (batch, num_classes)."""

    output_name = 'logits'

    def forward(self, inputs):
        return self.model(inputs, mode='tensor')


class SegmentorScores(_ExportedPart):
    """An mmseg ``EncoderDecoder``: images -> class scores (batch, K, H, W)."""

    output_name = 'seg_scores'

    def forward(self, inputs):
        metas = [dict(img_shape=tuple(inputs.shape[2:]))] * inputs.shape[0]
        return self.model.encode_decode(inputs, metas)


class DetectorFeatures(_ExportedPart):
    """An mmdet detector's backbone + neck: images -> tuple of feature maps
    (exported as ``feat0``, ``feat1``, ...)."""

    output_name = 'feat'

    def forward(self, inputs):
        return tuple(self.model.extract_feat(inputs))


class AveragingAdaptivePool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two products with averaging matrices.

    ONNX's exporter refuses adaptive pooling whose input size is not a multiple
    of the output size (UperNet's pyramid pools to 1, 2, 3 and 6 cells: a
    512x512 image gives 16x16 features). PyTorch averages over the windows
    ``[floor(i * n / m), ceil((i + 1) * n / m))`` of each axis, a separable
    mean: ``y = P_h @ x @ P_w^T`` with those windows' weights in P, exact for
    any size. The matrices follow the traced input size (fixed in the graph).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    @staticmethod
    def _averaging(size, cells, like):
        """(cells, size) matrix: row i averages the input window of cell i (made
        from Python numbers, so that the trace holds it as a constant)."""
        rows = []
        for i in range(cells):
            start, stop = i * size // cells, -(-(i + 1) * size // cells)
            rows.append([1.0 / (stop - start) if start <= j < stop else 0.0
                         for j in range(size)])
        return torch.tensor(rows, dtype=like.dtype, device=like.device)

    def forward(self, x):
        height, width = (int(size) for size in x.shape[-2:])
        out = self.output_size
        out_h, out_w = (out, out) if isinstance(out, int) else out
        rows = self._averaging(height, out_h or height, x)
        cols = self._averaging(width, out_w or width, x)
        return torch.matmul(torch.matmul(rows, x), cols.t())


def make_pooling_exportable(model):
    """Replace (in place) every ``nn.AdaptiveAvgPool2d`` of ``model`` that pools
    to more than one cell by :class:`AveragingAdaptivePool2d`; returns model."""
    for name, module in list(model.named_modules()):
        # to one cell it exports as GlobalAveragePool
        several_cells = (isinstance(module, nn.AdaptiveAvgPool2d)
                         and module.output_size not in (1, (1, 1)))
        if several_cells:
            parent_name, _, child = name.rpartition('.')
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, AveragingAdaptivePool2d(module.output_size))
    return model


_WRAPPERS = {'mmpretrain': ClassifierLogits, 'mmseg': SegmentorScores,
             'mmdet': DetectorFeatures}


def load_export_config(path, cfg_options=None):
    """The config at ``path``; an ``InputError`` unless it has a model of a
    task that can be exported (``default_scope`` mmpretrain, mmseg or mmdet)."""
    return load_config(path, cfg_options, require_model=True)


def load_exported_weights(model, path, config_path=None):
    """Load the checkpoint at ``path`` into the whole task ``model``, checked
    as the tools check it (:mod:`mmspatial.models.whole_model_check`): a
    released classifier is converted; another task, arch or number of classes,
    or NaN weights, are an ``InputError`` unless partial loading is allowed.
    A missing file is a ``MissingFileError``."""
    source = f'checkpoint {path!r}' + (f' (for {config_path})' if config_path else '')
    load_model_checkpoint(model, load_checkpoint_file(path), source)


def build_exportable(cfg, checkpoint=None):
    """The exported part of ``cfg``'s model, in eval mode on the CPU.

    Args:
        cfg (Config): from :func:`load_export_config`.
        checkpoint (str | None): weights; None keeps the initialisation (the
            backbone's ``init_cfg`` is not applied: no file is read).

    Returns:
        nn.Module: images (batch, 3, H, W) -> the outputs in the module docstring.
    """
    from mmengine.registry import DefaultScope

    scope = cfg.default_scope
    # the config's scope for this build only: the caller's default scope (an
    # inferencer of another task, say) stays as it was
    with DefaultScope.overwrite_default_scope(scope):
        model = build_model(cfg)
    if checkpoint is not None:
        load_exported_weights(model, checkpoint, cfg.filename)
    return _WRAPPERS[scope](make_pooling_exportable(model)).eval()
