"""Install mmspatial; the top-level ``ops/`` folder installs as ``mmspatial.ops``."""
from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open('mmspatial/version.py') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


packages = find_packages(include=['mmspatial', 'mmspatial.*'])
packages += ['mmspatial.ops'] + [
    'mmspatial.ops.' + name[len('ops.'):]
    for name in find_packages(include=['ops.*'])]

setup(
    name='mmspatial',
    version=read_version(),
    description='Spatial-Mamba backbones for OpenMMLab, with Triton and '
                'pure-PyTorch structure-aware SSM operators',
    packages=packages,
    package_dir={'mmspatial.ops': 'ops'},
    # torch.library reads the operators' `X | None` annotations at run time
    # (Python 3.10); the newest torch API the code uses is torch.library.custom_op
    # (torch 2.4). Tested: torch 2.14.1 (CI), 2.11 with triton 3.6 (GPU image).
    python_requires='>=3.10',
    # The OpenMMLab stack is pinned in requirements/*.txt (see the README):
    # mmcv must be built from source with its CPU ops, which pip cannot express.
    install_requires=['torch>=2.4', 'numpy'],
    extras_require={'triton': ['triton'],
                    'deploy': ['onnx>=1.16', 'onnxruntime>=1.18']},
    license='Apache-2.0',
)
