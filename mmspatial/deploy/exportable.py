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
    """``nn.AdaptiveAvgPool2d`` as two products with window matrices, for any
    input size.

    ONNX's exporter writes adaptive pooling as a fixed-size pooling, or refuses
    it when the input size is not a multiple of the output size (UperNet's
    pyramid pools to 1, 2, 3 and 6 cells). PyTorch averages, along each axis of
    n positions pooled to m cells, over the windows ``[floor(i * n / m),
    ceil((i + 1) * n / m))``: a separable sum ``P_h @ x @ P_w^T`` with 0/1
    window matrices P, divided by the windows' areas. P is built in the graph
    from the input's shape (positions from a cumulative sum over a row of ones;
    the window bounds in floating point are exact integers), so one exported
    file pools exactly at any size.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    @staticmethod
    def _windows(positions, cells):
        """(cells, n) 0/1 window matrix and (cells,) window sizes for an axis of
        n ``positions`` (0, 1, ..., n - 1, as floats)."""
        size = positions[-1:] + 1                                           # (1,) = n
        index = torch.arange(cells, dtype=positions.dtype, device=positions.device)
        start = torch.floor(index * size / cells)
        stop = torch.ceil((index + 1) * size / cells)
        inside = (positions >= start[:, None]) & (positions < stop[:, None])
        return inside.to(positions.dtype), stop - start

    def forward(self, x):
        out = self.output_size
        out_h, out_w = (out, out) if isinstance(out, int) else out
        area = 1
        if out_h is not None:  # None keeps the axis as it is
            rows, heights = self._windows(torch.ones_like(x[0, 0, :, 0]).cumsum(0) - 1,
                                          out_h)
            x, area = torch.matmul(rows, x), heights[:, None]
        if out_w is not None:
            cols, widths = self._windows(torch.ones_like(x[0, 0, 0, :]).cumsum(0) - 1,
                                         out_w)
            x, area = torch.matmul(x, cols.t()), area * widths
        return x / area


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


def pad_size_divisor(cfg):
    """What the input's height and width must be a multiple of: the data
    preprocessor's ``pad_size_divisor`` (mmdet, mmpretrain) or its test-time
    ``size_divisor`` (mmseg); 1 when it pads to no multiple."""
    preprocessor = (cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor')
                    or {})
    test_cfg = preprocessor.get('test_cfg') or {}
    return int(preprocessor.get('pad_size_divisor') or test_cfg.get('size_divisor') or 1)


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
