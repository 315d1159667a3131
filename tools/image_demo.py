"""Run a model of any shipped config on one image, as the libraries'
``demo/image_demo.py`` do.

    python tools/image_demo.py IMAGE CONFIG CHECKPOINT [--out-dir DIR]
                               [--device cpu] [--score-thr 0.3]

The model is the one ``mmspatial.apis.build_inferencer`` builds (mmdet's,
mmseg's or mmpretrain's inferencer, chosen by the config's ``default_scope``),
its checkpoint read and checked as every tool reads one. The prediction is
drawn on the image under ``--out-dir`` (``vis/``) and summed up on stdout.
"""
import os.path as osp

from mmspatial.apis import build_inferencer
from mmspatial.errors import MissingFileError
from mmspatial.utils import run_tool, tool_parser


def parse_args(argv=None):
    parser = tool_parser(description='Predict on one image with a Spatial-Mamba model')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file (detection, segmentation or '
                        'classification)')
    parser.add_argument('checkpoint', help='checkpoint file of the whole model, or a '
                        'released ImageNet classifier with a classification config')
    parser.add_argument('--out-dir', default='outputs',
                        help='where the drawn prediction goes (default: outputs)')
    parser.add_argument('--device', default=None,
                        help='e.g. cpu or cuda:0 (default: CUDA when available)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw boxes and masks scoring at least this')
    return parser.parse_args(argv)


def summary(prediction, score_thr):
    """One line on what the model predicted: a detection dict (mmdet), a
    classification dict (mmpretrain) or an (H, W) label map (mmseg)."""
    import numpy as np
    if isinstance(prediction, dict) and 'bboxes' in prediction:
        kept = sum(score >= score_thr for score in prediction['scores'])
        return f'{kept} detections scoring >= {score_thr}'
    if isinstance(prediction, dict) and 'pred_label' in prediction:
        return (f'class {prediction.get("pred_class")!r} (index '
                f'{prediction["pred_label"]}), score {prediction["pred_score"]:.3f}')
    labels = np.asarray(prediction)
    return (f'{labels.shape[0]} x {labels.shape[1]} label map with classes '
            f'{sorted(int(label) for label in np.unique(labels))}')


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.image):
        raise MissingFileError(f'image not found: {args.image!r}')
    inferencer = build_inferencer(args.config, args.checkpoint, device=args.device)
    call = dict(out_dir=args.out_dir)
    if 'pred_score_thr' in inferencer.visualize_kwargs:  # detection
        call['pred_score_thr'] = args.score_thr
    result = inferencer(args.image, **call)
    # mmdet and mmseg return a dict, mmpretrain the list; mmseg one image's map bare
    predictions = result['predictions'] if isinstance(result, dict) else result
    prediction = predictions[0] if isinstance(predictions, list) else predictions
    print(f'{args.image}: {summary(prediction, args.score_thr)}; drawn under '
          f'{args.out_dir}')
    return result


if __name__ == '__main__':
    run_tool(main, __file__)
