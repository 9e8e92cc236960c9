"""Entry point: ``python -m stclr_jax.main --config=configs/<file>.py[:args]
--workdir=DIR [--mode=pretrain|evaluate] [--config.<field>=value ...]``.

Joins a multi-host job through ``jax.distributed.initialize()`` when run
under SLURM, on a TPU pod slice, under Open MPI, or with explicit
``--coordinator_address/--num_processes/--process_id``; then calls
:func:`stclr_jax.train.pretrain` (``--mode=pretrain``; ``train`` is an alias)
or :func:`stclr_jax.evaluation.protocol.evaluate` (``--mode=evaluate``).
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from stclr_jax import train
from stclr_jax import workdir as workdir_lib
from stclr_jax.evaluation import protocol

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, e.g. configs/stclr_synthetic.py:aug=no_flip",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and logs.")
_MODE = flags.DEFINE_enum(
  "mode",
  "pretrain",
  ["pretrain", "train", "evaluate"],
  "pretrain (or its alias train): ST-CLR pretraining; evaluate: linear "
  "probe / fine-tuning with k-fold cross-validation (configs/finetune_*.py).",
)
_COORD = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-host)."
)
_NPROC = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PID = flags.DEFINE_integer("process_id", None, "This process's index.")


def cluster_detected(env=os.environ) -> bool:
  """Whether the environment is a multi-process SLURM, TPU pod or Open MPI
  job, which ``jax.distributed.initialize()`` configures by itself."""
  slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
  tpu_pod = len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
  mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  return slurm or tpu_pod or mpi


def initialize_distributed() -> None:
  if _COORD.value:
    jax.distributed.initialize(
      coordinator_address=_COORD.value,
      num_processes=_NPROC.value,
      process_id=_PID.value,
    )
  elif cluster_detected():
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  initialize_distributed()
  logging.info(
    "process %d/%d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  if _MODE.value == "evaluate":
    rep = protocol.evaluate(_CONFIG.value, _WORKDIR.value)
    final = rep[rep["final"]]
    print(
      f"{rep['final']} accuracy over folds {rep['folds_run']}: "
      f"{100 * final['mean']:.1f} ± {100 * final['std']:.1f}% "
      f"(init: {rep['init']['init']}); report: "
      f"{os.path.join(_WORKDIR.value, 'report.json')}, confusion matrix:"
      f" {rep['confusion_png']}"
    )
    return
  try:
    last = train.pretrain(_CONFIG.value, _WORKDIR.value)["last"]
  except workdir_lib.WorkdirError as e:
    # The project's message, last and alone, exit status 1: a record, the
    # config or a checkpoint that the workdir cannot continue with.
    raise SystemExit(f"stclr_jax.main: {e}") from None
  logging.info("finished: %s", last)
  line = (
    f"final step {last.get('step')}: loss {last.get('loss', float('nan')):.4f}"
  )
  if "contrastive_top1" in last:
    line += f", contrastive top-1 {last['contrastive_top1']:.3f}"
  print(line)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
