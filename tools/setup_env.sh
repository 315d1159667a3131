#!/usr/bin/env bash
# Create (or update) the project's virtual environment, from nothing to a
# working OpenMMLab stack with mmcv's compiled ops. Idempotent and quick when
# nothing changed: a stamp of the requirement files skips the work.
#
#   MMSPATIAL_VENV   where the venv lives (default: <repo>/.venv)
#   MMSPATIAL_CACHE  where built mmcv wheels and the side triton are kept
#                    (default: ~/.cache/mmspatial)
#   TORCH_SPEC       torch requirement (default: torch==2.14.1 torchvision==0.29.1)
#   FORCE_CUDA=1     build mmcv's CUDA ops too (needs nvcc matching your torch)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSPATIAL_VENV:-$ROOT/.venv}"
CACHE="${MMSPATIAL_CACHE:-$HOME/.cache/mmspatial}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
FORCE_CUDA="${FORCE_CUDA:-0}"
MMCV_VERSION=2.1.0
# The GPU image's triton, beside the pinned one: tools/analysis/kernel_report.py
# and its tests compile the kernels with both (tests find it at
# $MMSPATIAL_TRITON36_PATH, by default this folder).
TRITON_SIDE_VERSION=3.6.0
TRITON_SIDE="$CACHE/triton-$TRITON_SIDE_VERSION"

# triton $TRITON_SIDE_VERSION into its own folder (not the venv), once: a marker
# file is written after a complete install, so an interrupted one is redone.
install_side_triton() {
    [[ -f "$TRITON_SIDE/.complete" ]] && return 0
    echo "[setup_env] installing triton $TRITON_SIDE_VERSION into $TRITON_SIDE (side folder)"
    rm -rf "$TRITON_SIDE" "$TRITON_SIDE.partial"
    mkdir -p "$CACHE"
    "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps \
        --target "$TRITON_SIDE.partial" "triton==$TRITON_SIDE_VERSION"
    mv "$TRITON_SIDE.partial" "$TRITON_SIDE"
    touch "$TRITON_SIDE/.complete"
}

# The code needs Python >= 3.10 (setup.py): say so before building anything.
PY_FOR_VENV="$VENV/bin/python"
[[ -x "$PY_FOR_VENV" ]] || PY_FOR_VENV="$(command -v python3 || true)"
if [[ -z "$PY_FOR_VENV" ]] || ! "$PY_FOR_VENV" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "[setup_env] error: mmspatial needs Python >= 3.10; ${PY_FOR_VENV:-python3} is" \
         "$("${PY_FOR_VENV:-python3}" -V 2>&1 || echo missing). Put a newer python3 first on" \
         "PATH (or remove $VENV if it was made with an older one)." >&2
    exit 1
fi

stamp_inputs=("$ROOT"/requirements/*.txt "$ROOT/tools/setup_env.sh" "$ROOT/setup.py")
STAMP="$(cat "${stamp_inputs[@]}" | sha256sum | cut -c1-16)-$TORCH_SPEC-cuda$FORCE_CUDA"
if [[ -f "$VENV/.mmspatial-stamp" && "$(cat "$VENV/.mmspatial-stamp")" == "$STAMP" ]]; then
    install_side_triton
    exit 0
fi

log() { echo "[setup_env] $*"; }
[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; python3 -m venv "$VENV"; }
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

log "installing $TORCH_SPEC"
# shellcheck disable=SC2086
"${PIP[@]}" install -q $TORCH_SPEC
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt" "numpy>=2.0,<2.4"

TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    # pip's wheel cache is keyed by the sdist, not by the torch it was built
    # against, so keep our own cache keyed by the torch version.
    WHEEL_DIR="$CACHE/wheels/torch-$TORCH_VERSION-cuda$FORCE_CUDA"
    wheel="$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)"
    if [[ -z "$wheel" ]]; then
        log "building mmcv $MMCV_VERSION with ops against torch $TORCH_VERSION (about 20 min on 2 cores)"
        work="$(mktemp -d)"
        "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
            -d "$work" "mmcv==$MMCV_VERSION"
        tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
        # mmcv 2.1.0 hardcodes -std=c++14/17; torch >= 2.10 headers need C++20
        # (upstream open-mmlab/mmcv#3341).
        sed -i 's/-std=c++1[47]/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
        mkdir -p "$WHEEL_DIR"
        MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$work/dist" \
            "$work/mmcv-$MMCV_VERSION"
        cp "$work"/dist/mmcv-$MMCV_VERSION-*.whl "$WHEEL_DIR/"
        rm -rf "$work"
        wheel="$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl | head -n 1)"
    else
        log "using cached mmcv wheel $wheel"
    fi
    "${PIP[@]}" install -q --no-deps "$wheel"
fi

log "installing the OpenMMLab stack, the test tools and the ONNX tools"
"${PIP[@]}" install -q -r "$ROOT/requirements/openmmlab.txt" -r "$ROOT/requirements/tests.txt" \
    -r "$ROOT/requirements/deploy.txt"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
install_side_triton
"$PY" -c "import mmcv.ops, mmdet, mmseg, mmpretrain, mmspatial; print('[setup_env] ok: mmspatial', mmspatial.__version__)"
echo "$STAMP" > "$VENV/.mmspatial-stamp"
