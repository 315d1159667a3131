"""The task libraries' inferencers, built for this project's configs.

``build_inferencer(config, weights)`` returns mmdet's ``DetInferencer``,
mmseg's ``MMSegInferencer`` or mmpretrain's ``ImageClassificationInferencer``,
chosen by the config's ``default_scope``; call it on image paths or arrays as
those libraries document. Built this way, three rough edges of the libraries
are taken care of:

* scope: ``DetInferencer`` and ``MMSegInferencer`` set mmengine's global
  default scope to their own and leave it there; an
  ``ImageClassificationInferencer`` built afterwards then looks its transforms
  up in that registry and fails ("ResizeEdge is not in the mmseg::transform
  registry"). Here each inferencer is built inside its own scope, and the
  global scope is left as it was.
* checkpoints saved by mmengine's Runner (the demo's, anyone's training) pickle
  their message hub, which ``torch.load``'s default ``weights_only=True``
  (torch >= 2.6) refuses inside mmengine 0.10.7. Here ``weights`` is read
  under ``mmspatial.models.checkpoint.local_checkpoint_policy``, as the tools
  read every checkpoint: tensors only first, then, for the file named, in
  full with a warning.
* ``DetInferencer`` given numpy arrays with ``no_save_pred=False`` fails in
  mmdet (it names the prediction file after the input's ``img_path``, which an
  array has as None); here such predictions are numbered, as mmdet means to.
"""
import os.path as osp

from mmspatial.errors import InputError, MissingFileError
from mmspatial.models.checkpoint import local_checkpoint_policy


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


def build_inferencer(config, weights=None, device=None, **kwargs):
    """The task library's inferencer for ``config`` with ``weights``.

    Args:
        config (str): a config file of this project (or any mmdet / mmseg /
            mmpretrain config).
        weights (str | None): checkpoint file; None keeps the initialised model
            (the libraries warn).
        device (str | None): e.g. ``'cpu'``; None: CUDA when available.
        **kwargs: passed to the inferencer (e.g. ``palette``, ``classes``).

    Returns:
        ``DetInferencer``, ``MMSegInferencer`` or ``ImageClassificationInferencer``.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    if not osp.isfile(config):
        raise MissingFileError(f'config file not found: {config!r}')
    if weights is not None and '://' not in weights and not osp.isfile(weights):
        raise MissingFileError(f'checkpoint not found: {weights!r}')
    scope = Config.fromfile(config).get('default_scope')
    with DefaultScope.overwrite_default_scope(scope), local_checkpoint_policy():
        if scope == 'mmdet':
            return _det_inferencer_class()(model=config, weights=weights, device=device,
                                           **kwargs)
        if scope == 'mmseg':
            from mmseg.apis import MMSegInferencer
            return MMSegInferencer(model=config, weights=weights, device=device, **kwargs)
        if scope == 'mmpretrain':
            from mmpretrain.apis import ImageClassificationInferencer
            return ImageClassificationInferencer(model=config, pretrained=weights or False,
                                                 device=device, **kwargs)
    raise InputError(f'config {config!r}: default_scope {scope!r} is none of mmdet, '
                     'mmseg, mmpretrain, so there is no inferencer for it')
