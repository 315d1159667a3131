"""Every missing input of a config in one message, before anything is built."""
import pytest
from mmengine.config import Config

from mmspatial.errors import MissingFileError
from mmspatial.utils import PRETRAINED_HINT, check_inputs


def coco_cfg(root, val_root=None):
    def loader(data_root, split):
        return dict(dataset=dict(type='CocoDataset', data_root=data_root,
                                 ann_file=f'annotations/instances_{split}.json',
                                 data_prefix=dict(img=f'{split}/')))
    return Config(dict(train_dataloader=loader(root, 'train'),
                       val_dataloader=loader(val_root or root, 'val'),
                       val_evaluator=dict(type='CocoMetric',
                                          ann_file=f'{val_root or root}/ann.json')))


def test_all_missing_inputs_in_one_message(tmp_path):
    cfg = coco_cfg(str(tmp_path / 'train_root'), str(tmp_path / 'val_root'))
    with pytest.raises(MissingFileError) as error:
        check_inputs(cfg, 'det.py', ['train_dataloader', 'val_dataloader'], checkpoints=[
            ('the backbone\'s pretrained checkpoint', str(tmp_path / 'in1k.pth'),
             PRETRAINED_HINT)])
    message = str(error.value)
    assert 'config det.py: 4 inputs are missing' in message
    assert f"'{tmp_path / 'train_root'}' of train_dataloader" in message
    assert f"'{tmp_path / 'val_root'}' of val_dataloader" in message
    assert f"annotation file '{tmp_path / 'val_root'}/ann.json' of the val_evaluator" in message
    assert f"pretrained checkpoint '{tmp_path / 'in1k.pth'}' does not exist" in message
    assert message.count('COCO 2017') == 1  # one hint per dataset type
    assert 'model.backbone.init_cfg=None' in message


def test_an_empty_data_root_is_one_line(tmp_path):
    (tmp_path / 'coco').mkdir()
    cfg = coco_cfg(str(tmp_path / 'coco'))
    with pytest.raises(MissingFileError) as error:
        check_inputs(cfg, 'det.py', ['train_dataloader'])
    first = str(error.value).splitlines()[0]
    assert first == f"data root '{tmp_path / 'coco'}' of train_dataloader is empty (config det.py)"


def test_files_inside_the_root_are_checked(tmp_path):
    root = tmp_path / 'coco'
    (root / 'train').mkdir(parents=True)
    cfg = coco_cfg(str(root))
    with pytest.raises(MissingFileError) as error:
        check_inputs(cfg, 'det.py', ['train_dataloader'])
    assert (f"annotation file '{root}/annotations/instances_train.json' of "
            "train_dataloader does not exist") in str(error.value)
    (root / 'annotations').mkdir()
    (root / 'annotations' / 'instances_train.json').write_text('{}')
    check_inputs(cfg, 'det.py', ['train_dataloader'])  # complete: no error


def test_ade20k_hint_does_not_nest_its_folder():
    from mmspatial.utils.input_checks import DATA_HINTS
    hint = DATA_HINTS['ADE20KDataset']
    assert 'ADEChallengeData2016/images' not in hint and 'images/ and annotations/' in hint
