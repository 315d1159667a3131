#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun:
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
# e.g. bash tools/dist_train.sh configs/detection/maskrcnn_spatialmamba_t.py 8
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT as for torchrun.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py options]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}

torchrun \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
