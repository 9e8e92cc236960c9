#!/usr/bin/env bash
# Pretraining on a Cloud TPU VM slice: create it (or reuse it), install the
# package on every worker, and start the same command on all of them.
# stclr_jax.main calls jax.distributed.initialize(), which finds the other
# TPU workers by itself. A preempted or stopped TPU VM sends SIGTERM to its
# processes; the training loop saves a checkpoint at a step every worker
# agrees on (JAX's preemption sync) and exits; rerun to resume.
#
#   TPU_NAME=stclr-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 \
#     launch/tpu_pod.sh configs/stclr_oulu.py gs://bucket/stclr/run1 \
#       --config.data.data_dir=gs://bucket/tfds
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG[:ARGS] WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v4-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
REPO=${REPO:-https://github.com/stclr-jax/stclr_jax.git}

if ! gcloud compute tpus tpu-vm describe "${TPU_NAME}" --zone="${ZONE}" \
    >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "${TPU_NAME}" --zone="${ZONE}" \
    --accelerator-type="${ACCELERATOR}" --version="${VERSION}"
fi

run_all() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" \
    --worker=all --command="$1"
}

run_all "set -e; [ -d stclr_jax ] || git clone ${REPO} stclr_jax; \
  cd stclr_jax && git pull --ff-only && python3 -m venv .venv && \
  .venv/bin/pip install -q -U 'jax[tpu]' && .venv/bin/pip install -q -e ."

extra=$(printf ' %q' "$@")
run_all "cd stclr_jax && .venv/bin/python -m stclr_jax.main \
  --config=$(printf '%q' "${config}") --workdir=$(printf '%q' "${workdir}")${extra}"
