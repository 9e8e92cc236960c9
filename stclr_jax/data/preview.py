"""Writes a PNG of what the model sees: for a few videos, the frames of view
1 and view 2 side by side, exactly as the pretraining stream makes them;
with hard negatives (``pretext.hardneg``), the four views of each video:
A | P | NA | NP (the positive pair, then the second pair). With FaceSwap
(``pretext.faceswap``) the positives P (and NP) show the video's eyes,
brows, nose and mouth on another subject's head, where the swap was drawn;
the command prints which were. The views are the batch schema's
(:mod:`stclr_jax.pretext.batch`).

  python -m stclr_jax.data.preview --config=configs/stclr_synthetic.py \
      --out=preview.png [--num_videos=4] \
      [--config.pretext.faceswap.enabled=True]

With masked autoencoding (``pretext.mae``) and ``--reconstruction_of`` a
pretraining workdir, it writes what the model reconstructs instead, from
the workdir's latest checkpoint (or ``--step``): per video, the masked
input | the reconstruction | the clip (:func:`write_reconstruction`).
A masked-autoencoding run also writes this picture at each of its
checkpoints, into ``WORKDIR/reconstructions/step_N.png`` and its clu
summaries (:class:`ReconstructionWriter`).

  python -m stclr_jax.data.preview --config=configs/svfap_synthetic.py \
      --reconstruction_of=workdirs/mae --out=reconstruction.png
"""

from __future__ import annotations

import functools
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from stclr_jax.data import input as input_lib
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import options as pretext_options


def grid(*views: np.ndarray, gap: int = 4) -> np.ndarray:
  """Views of (N, T, H, W, 3) floats in [0,1] -> one uint8 image, a row
  per video: the first view's T frames, a gap, the next view's, ..."""
  n, t, h, w, _ = views[0].shape
  k = len(views)
  canvas = np.full(
    (n * (h + gap) - gap, k * t * w + (k - 1) * 3 * gap, 3), 255, np.uint8
  )
  for i in range(n):
    y = i * (h + gap)
    for j, view in enumerate(views):
      x0 = j * (t * w + 3 * gap)
      row = np.concatenate(list(view[i]), axis=1)
      canvas[y : y + h, x0 : x0 + t * w] = np.clip(row * 255 + 0.5, 0, 255)
  return canvas


def preview_batch(config, num_videos: int = 4) -> dict:
  """The first pretraining batch of ``num_videos`` videos, as the stream
  makes it for ``config``."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.batch_size = num_videos
  batches, _ = input_lib.pretrain_input(
    config, process_index=0, process_count=1
  )
  return next(batches.as_numpy_iterator())


def write_preview(config, out: str, num_videos: int = 4) -> str:
  return _write(preview_batch(config, num_videos), out)


def _write(batch, out):
  views = batch_lib.BatchSchema.of(batch).views
  Image.fromarray(grid(*(batch[k] for k in views))).save(out)
  return out


RECONSTRUCTIONS_DIR = "reconstructions"  # in a pretraining workdir


def reconstruction_batch(config, num_videos: int = 4) -> dict:
  """The clips a reconstruction preview shows: the stream's first
  ``num_videos`` videos, augmented on the host (clips in [0, 1], as the
  step sees them), with their mask seeds."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.aug.placement = "host"
  return preview_batch(config, num_videos)


@functools.cache
def _autoencoder_forward():
  """The autoencoder's forward, jitted once per process (so the pictures of
  a run's checkpoints compile once)."""
  from flax import nnx

  return nnx.jit(lambda model, *args: model(*args))


def reconstruction_grid(config, model, batch) -> np.ndarray:
  """The picture (uint8) of ``model`` (a :class:`~stclr_jax.models.
  masked_autoencoder.MaskedVideoAutoencoder`) on ``batch``
  (:func:`reconstruction_batch`): per video, the masked input | the
  reconstruction (:func:`stclr_jax.models.masked_autoencoder.
  reconstruction_views`) | the clip."""
  from stclr_jax.models import masked_autoencoder as mae
  from stclr_jax.pretext import masking

  ratio = pretext_options.Pretext.from_config(config).mae.ratio
  clip = np.asarray(batch[batch_lib.VIEW_A], np.float32)
  size = model.encoder.size
  _, t, h, w, _ = clip.shape
  slots, positions = t // size.tubelet, (h // size.patch) * (w // size.patch)
  visible, masked = masking.draw(batch[batch_lib.MASK_SEED], positions, ratio)
  mean = np.asarray(config.data.mean, np.float32)
  std = np.asarray(config.data.std, np.float32)
  pred = _autoencoder_forward()(model, (clip - mean) / std, visible, masked)
  views = mae.reconstruction_views(
    clip,
    np.asarray(pred, np.float32),
    masking.flat_positions(masked, slots, positions),
    size.tubelet,
    size.patch,
  )
  return grid(*views)


def write_reconstruction(
  config, workdir: str, out: str, num_videos: int = 4, step: int | None = None
) -> str:
  """Masked autoencoding's preview: :func:`reconstruction_grid` of the
  model of ``workdir``'s checkpoint ``step`` (default: the latest) on the
  stream's first ``num_videos`` clips; written to ``out``."""
  import orbax.checkpoint as ocp
  from flax import nnx

  from stclr_jax import init_from
  from stclr_jax.models import factory

  if pretext_options.Pretext.from_config(config).mae is None:
    raise ValueError(
      "a reconstruction preview needs config.pretext.mae.enabled=True"
    )
  ckpts = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = sorted(
    int(d)
    for d in (os.listdir(ckpts) if os.path.isdir(ckpts) else [])
    if d.isdigit()
  )
  if not steps:
    raise FileNotFoundError(f"{ckpts}: no checkpoint to reconstruct with")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"step {step}: {ckpts} has steps {steps}")
  model = factory.create_model(config)
  raw = ocp.StandardCheckpointer().restore(
    os.path.join(ckpts, str(step), "default")
  )
  params = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(params, init_from.pure(raw["params"]))
  nnx.update(model, params)
  batch = reconstruction_batch(config, num_videos)
  Image.fromarray(reconstruction_grid(config, model, batch)).save(out)
  return out


class ReconstructionWriter:
  """Masked autoencoding's picture at each checkpoint of a pretraining run
  (``stclr_jax.train``): the live model on the stream's first
  ``num_videos`` clips (the same clips at every step, on any resume),
  written to ``workdir/reconstructions/step_{step}.png`` and to the run's
  clu writer as image ``reconstruction``. Process 0 only."""

  def __init__(self, config, workdir: str, writer, num_videos: int = 4):
    self.config, self.writer = config, writer
    self.dir = os.path.join(workdir, RECONSTRUCTIONS_DIR)
    self.batch = reconstruction_batch(config, num_videos)

  def __call__(self, step: int, model) -> str:
    picture = reconstruction_grid(self.config, model, self.batch)
    os.makedirs(self.dir, exist_ok=True)
    path = os.path.join(self.dir, f"step_{step}.png")
    Image.fromarray(picture).save(path)
    self.writer.write_images(step, {"reconstruction": picture[None]})
    return path


def swaps(batch) -> str:
  """Which positives of a batch FaceSwap swapped, per row, e.g. ``P
  swapped, NP not drawn``; "" without FaceSwap."""
  if batch_lib.FACE_SWAP not in batch:
    return ""
  names = ("P", "NP")
  rows = []
  for i, row in enumerate(batch[batch_lib.FACE_SWAP]):
    what = ", ".join(
      f"{n} {batch_lib.SWAP_STATUSES[s].replace('_', ' ')}"
      for n, s in zip(names, row)
    )
    rows.append(f"row {i + 1}: {what}")
  return "; ".join(rows)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.reconstruction_of:
    path = write_reconstruction(
      f.config,
      f.reconstruction_of,
      f.out,
      f.num_videos,
      None if f.step < 0 else f.step,
    )
    print(
      f"wrote {path}: {f.num_videos} videos, masked input | "
      "reconstruction | clip"
    )
    return
  batch = preview_batch(f.config, f.num_videos)
  path = _write(batch, f.out)
  hard = pretext_options.Pretext.from_config(f.config).hardneg is not None
  cols = "A | P | NA | NP" if hard else "view 1 | view 2"
  print(f"wrote {path}: {f.num_videos} videos, {cols}")
  if swaps(batch):
    print(f"FaceSwap: {swaps(batch)}")


def _define_flags():
  """The command's flags, defined only when it runs as a command (so that
  importing this module next to another entry point defines nothing)."""
  config_flags.DEFINE_config_file(
    "config", None, "Config file.", lock_config=True
  )
  flags.DEFINE_string("out", "preview.png", "PNG file to write.")
  flags.DEFINE_integer("num_videos", 4, "Videos (rows) to show.")
  flags.DEFINE_string(
    "reconstruction_of",
    "",
    "A masked-autoencoding pretraining workdir: preview its reconstructions.",
  )
  flags.DEFINE_integer(
    "step", -1, "--reconstruction_of: the checkpoint's step (default latest)"
  )
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)
