#!/usr/bin/env bash
# Single machine (CPU, one GPU or a multi-GPU node): one process that sees
# all local devices.
#   launch/local.sh configs/stclr_synthetic.py /tmp/stclr_run [--config.x=y ...]
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG[:ARGS] WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
exec python -m stclr_jax.main --config="${config}" --workdir="${workdir}" "$@"
