"""Entry point: ``python -m stclr_jax.main --config=configs/<file>.py[:args]
--workdir=DIR [--config.<field>=value ...]``.

Joins a multi-host job through ``jax.distributed.initialize()`` when run
under SLURM, on a TPU pod slice, under Open MPI, or with explicit
``--coordinator_address/--num_processes/--process_id``; then calls
``train.train_and_evaluate`` (``--mode=train``) or ``evaluate.evaluate``
(``--mode=evaluate``).
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/stclr_synthetic.py:aug=no_flip",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and logs.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "evaluate"],
    "train: ST-CLR pretraining; evaluate: linear probe / fine-tuning with "
    "k-fold cross-validation (configs/finetune_*.py).")
_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _cluster_detected() -> bool:
  env = os.environ
  slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
  tpu_pod = len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
  mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  return slurm or tpu_pod or mpi


def initialize_distributed():
  import jax
  if _COORD.value:
    jax.distributed.initialize(coordinator_address=_COORD.value,
                               num_processes=_NPROC.value,
                               process_id=_PID.value)
  elif _cluster_detected():
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed()
  import jax

  from stclr_jax import train
  logging.info("process %d/%d, %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  if _MODE.value == "evaluate":
    from stclr_jax import evaluate
    rep = evaluate.evaluate(_CONFIG.value, _WORKDIR.value)
    final = rep[rep["final"]]
    print(f"{rep['final']} accuracy over folds {rep['folds_run']}: "
          f"{100 * final['mean']:.1f} ± {100 * final['std']:.1f}% "
          f"(init: {rep['init']['init']}); report: "
          f"{os.path.join(_WORKDIR.value, 'report.json')}, confusion matrix:"
          f" {rep['confusion_png']}")
    return
  last = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)["last"]
  logging.info("finished: %s", last)
  print(f"final step {last.get('step')}: loss {last.get('loss', float('nan')):.4f}"
        f", contrastive top-1 {last.get('contrastive_top1', float('nan')):.3f}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
