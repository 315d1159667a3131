"""The README, docs/ and the config folders' READMEs against the repository:
every link and cited file exists, every tool option cited is one the tool
defines, the model tables agree with what the tests measure and with the
metafiles, and no snippet names a checkpoint file the demo may not write."""
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO_ROOT / 'README.md', *(REPO_ROOT / 'docs').glob('*.md'),
                *(REPO_ROOT / 'configs').glob('*/README.md')])
CONFIG_FOLDERS = ('detection', 'segmentation', 'classification')

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
# a repository path in backquotes or on a command line; checkpoints/, data/,
# work_dirs/ and outputs are the user's, not the repository's
CITED_PATH = re.compile(r'(?<![\w/.])((?:tools|configs|docs|ops|mmspatial|tests|benchmarks|'
                        r'requirements)/[\w./-]+\.(?:py|sh|md|txt|json|yml))')
TOOL_CALL = re.compile(r'(?:python|bash) (tools/[\w/]+\.(?:py|sh))')
OPTION = re.compile(r'(?<![\w-])(--[a-z][a-z-]*)')
# the scripts that pass their options on to another tool
FORWARDS_TO = {'tools/dist_train.sh': 'tools/train.py', 'tools/dist_test.sh': 'tools/test.py'}
# options every tool may get from the tools' shared entry point
SHARED_TOOL_CODE = REPO_ROOT / 'mmspatial' / 'utils'


def page_id(page):
    return str(page.relative_to(REPO_ROOT))


def heading_anchors(page):
    """GitHub's anchors of the page's headings."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith('#'):
            title = line.lstrip('#').strip().lower()
            anchors.add(re.sub(r'[^\w\- ]', '', title).replace(' ', '-'))
    return anchors


def code_blocks(text):
    """The lines inside ``` fences, continuation lines joined."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith('```'):
            inside = not inside
        elif inside:
            if lines and lines[-1].endswith('\\'):
                lines[-1] = lines[-1][:-1] + ' ' + line.strip()
            else:
                lines.append(line)
    return lines


def test_every_page_is_found():
    names = {page_id(page) for page in PAGES}
    assert {'README.md', 'docs/installation.md', 'docs/weights.md'} <= names
    assert {f'configs/{folder}/README.md' for folder in CONFIG_FOLDERS} <= names


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_links_resolve(page):
    """Relative links name existing files, and their anchors existing headings."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r'[a-z]+://', target):
            continue
        path, _, anchor = target.partition('#')
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and anchor not in heading_anchors(linked):
            broken.append(target)
    assert not broken, f'{page_id(page)}: broken links {broken}'


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_cited_files_exist(page):
    missing = sorted({path for path in CITED_PATH.findall(page.read_text())
                      if '{' not in path and not (REPO_ROOT / path).exists()})
    assert not missing, f'{page_id(page)} cites missing files {missing}'


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_cited_tool_options_exist(page):
    """Every --option on a command line of a code block is defined by that tool
    (or by the tool a dist_*.sh script passes its options to), or by the
    tools' shared entry point."""
    shared = ''.join(path.read_text() for path in sorted(SHARED_TOOL_CODE.glob('*.py')))
    unknown = []
    for line in code_blocks(page.read_text()):
        for call in TOOL_CALL.finditer(line):
            tool = call.group(1)
            script = REPO_ROOT / FORWARDS_TO.get(tool, tool)
            if not script.exists():
                unknown.append(f'{tool} (no such tool)')
                continue
            source = script.read_text() + shared
            rest = line[call.end():].split('#')[0]
            rest = re.split(r'(?:python|bash) tools/', rest)[0]  # up to the next call
            unknown += [f'{tool} {option}' for option in OPTION.findall(rest)
                        if f"'{option}'" not in source]
    assert not unknown, f'{page_id(page)}: options the tools do not define: {unknown}'


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_no_snippet_names_an_iteration_checkpoint(page):
    """The demo writes the checkpoint of the iteration it reached: snippets read
    its name from last_checkpoint."""
    assert not re.findall(r'iter_\d+\.pth', page.read_text())


def readme_flops():
    """(model, arch) -> (paper GFLOPs, ours) from the README's model tables."""
    names = {'Mask R-CNN': 'maskrcnn', 'UperNet': 'upernet'}
    flops = {}
    for line in (REPO_ROOT / 'README.md').read_text().splitlines():
        row = re.match(r'\| (Mask R-CNN|UperNet)? ?([TSB])(?: 1x)? \|.*\| '
                       r'([\d.]+)G / ([\d.]+)G \|$', line)
        if row:
            model = names.get(row.group(1), 'backbone')
            flops[model, row.group(2).lower()] = (float(row.group(3)), float(row.group(4)))
    return flops


def test_readme_flops_are_the_counts_the_tests_check():
    """The README prints what tests/tools/test_analysis.py asserts get_flops counts."""
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    pytest.importorskip('mmpretrain')
    from tests.tools.test_analysis import PAPER_AND_README
    assert readme_flops() == PAPER_AND_README


def metafile_rows(folder):
    """(config file name, metric values as printed) of each model of the folder."""
    metafile = yaml.safe_load((REPO_ROOT / 'configs' / folder / 'metafile.yml').read_text())
    for model in metafile['Models']:
        values = [f'{value:.1f}' for result in model['Results']
                  for value in result['Metrics'].values()]
        yield Path(model['Config']).name, values


@pytest.mark.parametrize('folder', CONFIG_FOLDERS)
def test_config_readme_agrees_with_metafile(folder):
    """One row per metafile model, linking its config, with its metrics."""
    readme = (REPO_ROOT / 'configs' / folder / 'README.md').read_text()
    rows = [line for line in readme.splitlines() if '](' in line and line.startswith('|')]
    for config, values in metafile_rows(folder):
        row = [line for line in rows if f']({config})' in line]
        assert len(row) == 1, f'{folder}/README.md: {len(row)} rows link {config}'
        cells = [cell.strip() for cell in row[0].split('|')]
        assert all(value in cells for value in values), (config, values, row[0])
