"""A small synthetic data set of coloured shapes, in the real COCO and mmseg layouts.

A new user has no data set, and none can be downloaded in the demo's setting; this
module draws one in seconds so that the demo (``tools/demo.py``) trains and
evaluates the real configs with the real loaders and metrics:

- ``generate_synthetic_coco``: COCO instance segmentation,
  ``annotations/instances_{train,val}.json`` and image folders ``{train,val}/``,
  loadable by mmdet's ``CocoDataset`` with ``metainfo=dict(classes=SHAPE_CLASSES)``.
- ``generate_synthetic_seg``: semantic segmentation in the standard mmseg layout,
  ``img_dir/{train,val}/*.jpg`` and ``ann_dir/{train,val}/*.png`` (label 0 is the
  background, ``i + 1`` is ``SHAPE_CLASSES[i]``), loadable by mmseg's
  ``BaseSegDataset`` with ``metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE)``
  and ``reduce_zero_label=False``.

Scenes: a textured, noisy background and a few large shapes (circle, triangle,
square, star) of random size, colour and rotation, drawn in order, so that later
shapes occlude earlier ones. Every annotation describes what is visible: masks,
polygons, boxes and areas come from the final instance map, and a placement that
would hide too much of an earlier shape, or punch a hole into it (which a COCO
polygon cannot represent), is drawn again elsewhere. The colour of a shape says
nothing about its class: only the shape does.

Everything is a function of ``seed``: the same call writes the same files.
Only numpy and OpenCV are used.

Command line::

    python -m mmspatial.datasets.synthetic --out data/synthetic
"""
import argparse
import json
import os
import os.path as osp

import cv2
import numpy as np

SHAPE_CLASSES = ('circle', 'triangle', 'square', 'star')
SHAPE_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)]
SEG_CLASSES = ('background', ) + SHAPE_CLASSES
SEG_PALETTE = [(0, 0, 0)] + SHAPE_PALETTE

# A visible part smaller than this fraction of its shape makes the placement be
# drawn again: heavily hidden shapes make a demo's ground truth ambiguous.
MIN_VISIBLE_FRACTION = 0.6
MAX_PLACEMENT_TRIES = 30


def _background(rng, size):
    """A smooth random colour field plus a periodic texture (H, W, 3) float32."""
    base = rng.uniform(60, 200, size=3)
    coarse = rng.normal(0, 35, size=(4, 4, 3)).astype(np.float32)
    img = base + cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    # stripes of random orientation and period: texture the detector must ignore
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
    img += rng.uniform(5, 20) * np.sin(phase)[..., None]
    return img.astype(np.float32)


def _shape_polygon(rng, label, cx, cy, r):
    """Vertices (K, 2) of a polygonal shape of class ``label``, radius ``r``."""
    angle = rng.uniform(0, 2 * np.pi)
    name = SHAPE_CLASSES[label]
    if name == 'triangle':
        # roughly equilateral, vertex angles jittered
        t = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        radii = np.full(3, r)
    elif name == 'square':
        t = angle + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif name == 'star':
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.4, 0.5))
    else:
        raise ValueError(f'{name} is not a polygonal shape')
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _shape_mask(rng, label, size, min_radius, max_radius):
    """A filled shape of class ``label`` at a random place, as a bool mask."""
    r = rng.uniform(min_radius, max_radius)
    # keep most of the shape inside the image
    cx, cy = rng.uniform(0.6 * r, size - 0.6 * r, size=2)
    mask = np.zeros((size, size), np.uint8)
    if SHAPE_CLASSES[label] == 'circle':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1,
                   lineType=cv2.LINE_8)
    else:
        pts = np.round(_shape_polygon(rng, label, cx, cy, r)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _has_hole(mask):
    """Whether a bool mask has a hole (a contour with a parent in RETR_CCOMP)."""
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _shape_colour(rng, background_mean):
    """A saturated colour far enough from the mean background colour."""
    for _ in range(20):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256),
                          rng.integers(130, 256)]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        if np.abs(colour - background_mean).sum() > 120:
            break
    return colour


def make_scene(rng, image_size=256, max_objects=4, min_radius_frac=0.12,
               max_radius_frac=0.28):
    """Draw one scene.

    Returns:
        tuple: ``image`` (H, W, 3) uint8 BGR, ``instance_map`` (H, W) int32 with 0
        for the background and ``k + 1`` for the ``k``-th instance in ``labels``,
        and ``labels`` (list of class indices into ``SHAPE_CLASSES``).
    """
    size = image_size
    img = _background(rng, size)
    background_mean = img.reshape(-1, 3).mean(0)
    instance_map = np.zeros((size, size), np.int32)
    labels, masks = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        for _ in range(MAX_PLACEMENT_TRIES):
            full = _shape_mask(rng, label, size, min_radius_frac * size,
                               max_radius_frac * size)
            # what would each earlier instance keep visible under this shape?
            ok = True
            for k, earlier in enumerate(masks):
                visible = (instance_map == k + 1) & ~full
                if (visible.sum() < MIN_VISIBLE_FRACTION * earlier.sum()
                        or _has_hole(visible)):
                    ok = False
                    break
            if ok:
                break
        else:
            continue  # no room for this shape: the scene keeps fewer objects
        instance_map[full] = len(masks) + 1
        masks.append(full)
        labels.append(label)
        colour = _shape_colour(rng, background_mean)
        # a light shading gradient so that shapes are not perfectly flat
        yy, xx = np.nonzero(full)
        shade = rng.uniform(-0.15, 0.15) * (xx - xx.mean()) / max(1, np.ptp(xx))
        img[yy, xx] = colour * (1 + shade)[:, None]
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, instance_map, labels


def mask_to_annotation(mask):
    """COCO ``segmentation``, ``bbox`` and ``area`` of a visible-part bool mask.

    Polygons ``[[x0, y0, x1, y1, ...], ...]`` trace the outer contours through
    pixel centres (``index + 0.5``). Pieces of fewer than 3 vertices (slivers one
    pixel wide) are left out, of all three fields. The box ``[x, y, w, h]``
    (pixel-edge convention) and the area (pixel count) are those of the pieces
    kept.

    Returns:
        dict | None: None when nothing is left.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    kept = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(kept, contours, -1, 1, thickness=cv2.FILLED)
    kept = kept.astype(bool) & mask
    points = np.concatenate(contours).reshape(-1, 2)
    x0, y0 = (int(v) for v in points.min(0))
    x1, y1 = (int(v) for v in points.max(0))
    return dict(
        segmentation=[[float(v) + 0.5 for v in c.reshape(-1)]
                      for c in contours],
        bbox=[x0, y0, x1 + 1 - x0, y1 + 1 - y0],
        area=float(kept.sum()))


def _split_rng(seed, split):
    # independent, reproducible streams per split
    return np.random.default_rng([seed, {'train': 0, 'val': 1}[split]])


def _write_image(path, image):
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f'could not write {path}')


def generate_synthetic_coco(root, num_train=200, num_val=25, image_size=256,
                            seed=0, max_objects=4):
    """Write a COCO-style instance segmentation set under ``root``.

    Layout: ``root/annotations/instances_{train,val}.json`` and images in
    ``root/{train,val}/``. Category ids are 1-based in ``SHAPE_CLASSES`` order.

    Returns:
        dict: the number of images and of annotations per split.
    """
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(SHAPE_CLASSES)]
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        rng = _split_rng(seed, split)
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, num + 1):
            image, instance_map, labels = make_scene(rng, image_size,
                                                     max_objects)
            file_name = f'{image_id:06d}.jpg'
            _write_image(osp.join(root, split, file_name), image)
            images.append(dict(id=image_id, file_name=file_name,
                               height=image_size, width=image_size))
            for k, label in enumerate(labels):
                annotation = mask_to_annotation(instance_map == k + 1)
                if annotation is not None:
                    annotations.append(dict(
                        id=len(annotations) + 1, image_id=image_id,
                        category_id=label + 1, iscrowd=0, **annotation))
        coco = dict(
            info=dict(description='mmspatial synthetic shapes',
                      version='1.0', seed=seed),
            licenses=[], images=images, annotations=annotations,
            categories=categories)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'),
                  'w') as f:
            json.dump(coco, f)
        counts[split] = dict(images=len(images), annotations=len(annotations))
    return counts


def generate_synthetic_seg(root, num_train=200, num_val=25, image_size=256,
                           seed=0, max_objects=4):
    """Write a semantic segmentation set in mmseg's layout under ``root``.

    Layout: ``root/img_dir/{train,val}/*.jpg`` and ``root/ann_dir/{train,val}/*.png``
    (uint8 label maps: 0 background, ``i + 1`` for ``SHAPE_CLASSES[i]``, i.e. the
    indices of ``SEG_CLASSES``).

    Returns:
        dict: the number of images per split.
    """
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        rng = _split_rng(seed, split)
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for image_id in range(1, num + 1):
            image, instance_map, labels = make_scene(rng, image_size,
                                                     max_objects)
            semantic = np.zeros(instance_map.shape, np.uint8)
            for k, label in enumerate(labels):
                semantic[instance_map == k + 1] = label + 1
            _write_image(osp.join(img_dir, f'{image_id:06d}.jpg'), image)
            if not cv2.imwrite(osp.join(ann_dir, f'{image_id:06d}.png'),
                               semantic):
                raise OSError(f'could not write a label map in {ann_dir}')
        counts[split] = dict(images=num)
    return counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the synthetic shapes data set (COCO instance '
        'segmentation under OUT/coco, mmseg semantic segmentation under '
        'OUT/seg).')
    parser.add_argument('--out', default='data/synthetic')
    parser.add_argument('--task', choices=('all', 'coco', 'seg'), default='all')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=25)
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--max-objects', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kwargs = dict(num_train=args.num_train, num_val=args.num_val,
                  image_size=args.image_size, seed=args.seed,
                  max_objects=args.max_objects)
    if args.task in ('all', 'coco'):
        counts = generate_synthetic_coco(osp.join(args.out, 'coco'), **kwargs)
        print(f'COCO instance segmentation in {osp.join(args.out, "coco")}: '
              f'{counts}')
    if args.task in ('all', 'seg'):
        counts = generate_synthetic_seg(osp.join(args.out, 'seg'), **kwargs)
        print(f'semantic segmentation in {osp.join(args.out, "seg")}: '
              f'{counts}')


if __name__ == '__main__':
    main()
