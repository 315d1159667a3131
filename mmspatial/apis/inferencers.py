"""The task libraries' inferencers, built for this project's configs.

``build_inferencer(config, weights)`` returns mmdet's ``DetInferencer``,
mmseg's ``MMSegInferencer`` or mmpretrain's ``ImageClassificationInferencer``,
chosen by the config's ``default_scope``; call it on image paths or arrays as
those libraries document. Built this way, four rough edges of the libraries
are taken care of:

* weights: the libraries load a checkpoint non-strictly and only warn about
  what did not fit; a released ImageNet classifier (``{'model': ...}``) loaded
  nothing at all. Here the file is read by
  ``mmspatial.models.checkpoint.load_checkpoint_file``, as the tools read every
  checkpoint, and goes through their whole-model check
  (``mmspatial.models.whole_model_check``): a released classifier is converted
  to the classifier's keys, and a checkpoint of another task or arch, a head
  for another number of classes or NaN weights are an ``InputError`` (unless
  ``MMSPATIAL_ALLOW_PARTIAL_LOAD=1``).
* classes: without ``dataset_meta`` in the checkpoint, mmseg falls back to
  Cityscapes' 19 classes and mmdet to COCO's 80; here the classes and palette
  come from the config's test dataset.
* scope: ``DetInferencer`` and ``MMSegInferencer`` set mmengine's global
  default scope to their own and leave it there; an
  ``ImageClassificationInferencer`` built afterwards then looks its transforms
  up in that registry and fails ("ResizeEdge is not in the mmseg::transform
  registry"). Here each inferencer is built inside its own scope, and the
  global scope is left as it was.
* ``DetInferencer`` given numpy arrays with ``no_save_pred=False`` fails in
  mmdet (it names the prediction file after the input's ``img_path``, which an
  array has as None); here such predictions are numbered, as mmdet means to.
"""
import copy
import os
import os.path as osp

from mmspatial.errors import InputError, MissingFileError
from mmspatial.models.checkpoint import load_checkpoint_file
from mmspatial.models.whole_model_check import load_model_checkpoint


def config_dataset_meta(cfg):
    """``classes`` and ``palette`` of the config's test dataset, as the dataset
    resolves them (its ``metainfo`` over its class's ``METAINFO``); the dataset
    is built lazily, in the current default scope: no file is read."""
    from mmengine.registry import DATASETS
    dataset = copy.deepcopy(cfg.test_dataloader.dataset)
    while 'dataset' in dataset and 'type' in dataset.dataset:  # dataset wrappers
        dataset = dataset.dataset
    dataset['lazy_init'] = True
    metainfo = DATASETS.build(dataset).metainfo
    return {key: list(metainfo[key]) for key in ('classes', 'palette')
            if metainfo.get(key) is not None}


def saved_dataset_meta(checkpoint):
    """The ``classes`` and ``palette`` in a checkpoint's ``meta.dataset_meta``
    (or OpenMMLab 0.x's ``CLASSES``/``PALETTE``), those it has."""
    meta = (checkpoint or {}).get('meta') or {}
    saved = {key.lower(): value for key, value in (meta.get('dataset_meta') or {}).items()}
    if not saved.get('classes') and meta.get('CLASSES'):
        saved = dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    # only these two: mmseg's visualizer takes the dict as its keyword arguments
    return {key: saved[key] for key in ('classes', 'palette') if saved.get(key)}


def dataset_meta(checkpoint, cfg):
    """The classes and palette the model predicts: the checkpoint's where it
    has them, the config's test dataset's otherwise. A palette the checkpoint
    lacks comes from the config when it has one colour per class."""
    saved = saved_dataset_meta(checkpoint)
    if 'classes' in saved and 'palette' in saved:
        return saved
    configured = config_dataset_meta(cfg)
    if 'classes' not in saved:
        return configured
    if len(configured.get('palette') or ()) == len(saved['classes']):
        saved['palette'] = configured['palette']
    return saved


def _det_inferencer_class():
    from mmdet.apis import DetInferencer

    class ArrayAwareDetInferencer(DetInferencer):
        """``DetInferencer`` that also saves predictions of numpy-array inputs."""

        def pred2dict(self, data_sample, pred_out_dir=''):
            if 'img_path' in data_sample and data_sample.img_path is None:
                # an array input: mmdet's numbered file names apply
                del data_sample.img_path
            return super().pred2dict(data_sample, pred_out_dir)

    return ArrayAwareDetInferencer


def _checked_weights(inferencer_class, source):
    """``inferencer_class`` (mmdet's or mmseg's, both mmengine
    ``BaseInferencer``\ s) building its model with the weights read and
    checked as the tools do and the classes of :func:`dataset_meta`."""

    class CheckedWeights(inferencer_class):

        def _init_model(self, cfg, weights, device='cpu'):
            from mmengine.registry import MODELS
            if cfg.model.get('pretrained') is not None:
                del cfg.model.pretrained  # the checkpoint replaces it
            model = MODELS.build(cfg.model)
            checkpoint = None
            if weights is not None:
                checkpoint = load_checkpoint_file(weights)
                load_model_checkpoint(model, checkpoint, source)
            model.dataset_meta = dataset_meta(checkpoint, cfg)
            palette = getattr(self, 'palette', 'none')  # DetInferencer's argument
            if palette != 'none':
                model.dataset_meta['palette'] = palette
            model.cfg = cfg
            return model.to(device).eval()

    CheckedWeights.__name__ = CheckedWeights.__qualname__ = (
        f'Checked{inferencer_class.__name__}')
    return CheckedWeights


def _classifier_inferencer(config, weights, source, device, **kwargs):
    """mmpretrain's ``ImageClassificationInferencer`` over the config's model,
    its weights read and checked as the tools do. The classes are the
    checkpoint's, or (``get_model``'s default) the test dataset class's."""
    from mmpretrain.apis import get_model
    model = get_model(config, pretrained=False)
    if weights is not None:
        checkpoint = load_checkpoint_file(weights)
        load_model_checkpoint(model, checkpoint, source)
        model._dataset_meta = saved_dataset_meta(checkpoint) or model._dataset_meta
    return _classifier_inferencer_class()(model=model, pretrained=False, device=device,
                                          **kwargs)


def _classifier_inferencer_class():
    """mmpretrain's ``ImageClassificationInferencer`` that also takes
    ``out_dir``, as mmdet's and mmseg's inferencers do: the drawn predictions
    go to ``<out_dir>/vis/`` (mmpretrain's own ``show_dir`` still works)."""
    from mmpretrain.apis import ImageClassificationInferencer

    class OutDirClassificationInferencer(ImageClassificationInferencer):
        visualize_kwargs = ImageClassificationInferencer.visualize_kwargs | {'out_dir'}

        def visualize(self, ori_inputs, preds, out_dir='', **kwargs):
            if out_dir and kwargs.get('show_dir') is None:
                kwargs['show_dir'] = osp.join(out_dir, 'vis')
                os.makedirs(kwargs['show_dir'], exist_ok=True)
            return super().visualize(ori_inputs, preds, **kwargs)

    return OutDirClassificationInferencer


def build_inferencer(config, weights=None, device=None, **kwargs):
    """The task library's inferencer for ``config`` with ``weights``.

    Args:
        config (str): a config file of this project (or any mmdet / mmseg /
            mmpretrain config).
        weights (str | Path | None): checkpoint file, checked against the
            whole model (see the module docstring); None keeps the initialised
            model (the libraries warn).
        device (str | None): e.g. ``'cpu'``; None: CUDA when available.
        **kwargs: passed to the inferencer (e.g. ``palette``, ``classes``).

    Returns:
        ``DetInferencer``, ``MMSegInferencer`` or ``ImageClassificationInferencer``.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    if not osp.isfile(config):
        raise MissingFileError(f'config file not found: {config!r}')
    if weights is not None:
        weights = str(weights)  # a pathlib.Path too
        if '://' not in weights and not osp.isfile(weights):
            raise MissingFileError(f'checkpoint not found: {weights!r}')
    source = f'checkpoint {weights!r} (for {config})'
    scope = Config.fromfile(config).get('default_scope')
    with DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            inferencer_class = _checked_weights(_det_inferencer_class(), source)
            return inferencer_class(model=config, weights=weights, device=device, **kwargs)
        if scope == 'mmseg':
            from mmseg.apis import MMSegInferencer
            inferencer_class = _checked_weights(MMSegInferencer, source)
            return inferencer_class(model=config, weights=weights, device=device, **kwargs)
        if scope == 'mmpretrain':
            return _classifier_inferencer(config, weights, source, device, **kwargs)
    raise InputError(f'config {config!r}: default_scope {scope!r} is none of mmdet, '
                     'mmseg, mmpretrain, so there is no inferencer for it')
