"""From a config to this process's input: TFDS builder, shards, streams."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile

import jax
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import (
  datasets,  # noqa: F401  (registers the builders)
  sampling,
)
from stclr_jax.data import streams as streams_lib
from stclr_jax.data import videos as videos_lib
from stclr_jax.data import views as views_lib
from stclr_jax.data.datasets import video_folder
from stclr_jax.pretext import options as pretext_options


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    return jax.process_index(), jax.process_count()
  return process_index, process_count


def _builder_args(data: ml_collections.ConfigDict) -> tuple[str, dict]:
  kw = {"data_dir": data.data_dir or None}
  if data.name.split("/")[0] == "video_folder":
    if not data.csv_path:
      raise ValueError("data.name=video_folder needs data.csv_path")
    kw["config"] = video_folder.config_for_csv(
      data.csv_path, data.name.split("/")[1] if "/" in data.name else None
    )
    return "video_folder", kw
  return data.name, kw


@contextlib.contextmanager
def _host_lock(name: str, data_dir: str | None):
  """One process per host at a time: an exclusive lock on a file in this
  host's temporary folder, keyed by the data set and its data_dir."""
  key = hashlib.sha1(f"{name}|{data_dir}".encode()).hexdigest()[:16]
  path = os.path.join(tempfile.gettempdir(), f"stclr_jax-prepare-{key}.lock")
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepared_builder(
  data: ml_collections.ConfigDict, *, process_index=None, process_count=None
):
  """The TFDS builder named by ``data.name``, prepared (built once, then
  read from ``data.data_dir``).

  On several processes, building it everywhere at once would race in a
  shared data_dir. So process 0 builds it while the others wait at a
  barrier; after it, a process that still finds it unbuilt (its data_dir is
  a disk of its own host) builds it there, one process per host at a time.
  (That lock is per host: a shared data_dir must show process 0's build to
  every host after the barrier, as NFS with close-to-open consistency and
  GCS do.) If process 0's build fails, every process raises, none waits.
  """
  name, kw = _builder_args(data)
  pi, pc = _process(process_index, process_count)
  download = tfds.download.DownloadConfig(manual_dir=data.manual_dir or None)
  if pc > 1 and pi > 0:
    logging.info("process %d: waiting for process 0 to prepare %s", pi, name)
  if pc == 1:
    builder = tfds.builder(name, **kw)
    builder.download_and_prepare(download_config=download)
    return builder
  failed = None
  if pi == 0:
    try:
      builder = tfds.builder(name, **kw)
      builder.download_and_prepare(download_config=download)
    except Exception as e:  # reach the barrier, so no process waits forever
      failed = e
  multihost_utils.sync_global_devices(f"stclr_jax: {name} prepared")
  if failed is not None:
    raise failed
  if pi > 0:
    builder = tfds.builder(name, **kw)
    if builder.is_prepared():
      logging.info("process %d: %s was prepared by process 0", pi, name)
    else:
      with _host_lock(name, kw["data_dir"]):
        builder = tfds.builder(name, **kw)
        logging.info("process %d: preparing %s on this host", pi, name)
        builder.download_and_prepare(download_config=download)
  return builder


def spatial_augment(aug) -> augment_lib.SpatialAugment:
  return augment_lib.SpatialAugment(
    crop=aug.crop,
    crop_area=tuple(aug.crop_area),
    crop_aspect=tuple(aug.crop_aspect),
    flip=aug.flip,
    color=aug.color,
    color_strength=aug.color_strength,
    color_prob=aug.color_prob,
    grayscale_prob=aug.grayscale_prob,
  )


def placement(aug, video_shape=None) -> str:
  """``config.aug.placement``, with "auto" resolved: "device" on an
  accelerator, "host" on CPU; also "host" where the device path could not
  know the size to ship frames at (a data set without a static frame size,
  ``video_shape``, and no ``aug.ship_size``), with a warning saying so."""
  where = aug.get("placement", "host")
  if where == "auto":
    if jax.default_backend() == "cpu":
      return "host"
    static = video_shape is not None and None not in tuple(video_shape)[1:3]
    if _ship_size(aug) is None and not static:
      logging.warning(
        "aug.placement=auto: augmenting on the host, since this data set's "
        "frames have no static size (video %s) and config.aug.ship_size is "
        "not set; set it to the largest cached (H, W) to augment on the "
        "device",
        video_shape,
      )
      return "host"
    return "device"
  if where not in views_lib.PLACEMENTS:
    raise ValueError(
      f"config.aug.placement: {where!r} unknown; choose from "
      f"{('auto', *views_lib.PLACEMENTS)}"
    )
  return where


def view_spec(config, video_shape=None) -> views_lib.ViewSpec:
  """The pretraining views of ``config``: its clips, augmentation and
  pretext options (:meth:`stclr_jax.pretext.options.Pretext.from_config`,
  which validates them)."""
  modes = tuple(
    m.strip() for m in config.aug.temporal_modes.split(",") if m.strip()
  )
  for m in modes:
    if m not in sampling.MODES:
      raise ValueError(
        f"config.aug.temporal_modes: unknown sampler {m!r}; "
        f"choose from {sampling.MODES}"
      )
  return views_lib.ViewSpec(
    clip_len=config.data.clip_len,
    size=config.data.size,
    temporal_modes=modes,
    spatial=spatial_augment(config.aug),
    pretext=pretext_options.Pretext.from_config(config),
    placement=placement(config.aug, video_shape),
    ship_size=_ship_size(config.aug),
  )


def _ship_size(aug) -> tuple[int, int] | None:
  size = tuple(int(v) for v in aug.get("ship_size", (0, 0)))
  if size == (0, 0):
    return None
  if len(size) != 2 or min(size) <= 0:
    raise ValueError(
      f"config.aug.ship_size must be (H, W) > 0, or (0, 0) for the data "
      f"set's frame size; got {size}"
    )
  return size


def num_data_shards(data, process_count: int) -> int:
  """Logical input shards: ``data.num_shards``, or one per process.

  The data stream is a function of (seed, step, number of shards) only, so a
  run with a fixed ``num_shards`` sees the same global batches on any number
  of processes that divides it (e.g. 1 process on 8 devices and 2 processes
  on 4 devices each).
  """
  shards = data.get("num_shards", 0) or process_count
  if shards % process_count:
    raise ValueError(
      f"data.num_shards={shards} is not a multiple of the "
      f"{process_count} processes"
    )
  return shards


def pretrain_input(
  config,
  *,
  start_step=0,
  num_shards: int | None = None,
  builder=None,
  process_index=None,
  process_count=None,
) -> tuple[tf.data.Dataset, int]:
  """This host's pretraining batches and the *global* number of videos.

  The global batch is split over ``S`` logical shards (disjoint parts of the
  split): ``num_shards``, or :func:`num_data_shards` of the config. This
  process reads its ``S / P`` shards and concatenates their batches in shard
  order, so the global batch is the concatenation of all shards' batches,
  in order. ``builder``: the data set's prepared builder, if the caller
  already has it (:func:`prepared_builder` runs a barrier on several
  processes; once is enough).
  """
  pi, pc = _process(process_index, process_count)
  shards = num_shards or num_data_shards(config.data, pc)
  if shards % pc:
    raise ValueError(
      f"{shards} data shards cannot be split over {pc} processes"
    )
  if config.batch_size % shards:
    raise ValueError(
      f"batch_size {config.batch_size} is not divisible by "
      f"the {shards} data shards"
    )
  per_shard = config.batch_size // shards
  if builder is None:
    builder = prepared_builder(config.data, process_index=pi, process_count=pc)
  streams = []
  for s in range(pi * shards // pc, (pi + 1) * shards // pc):
    sub = videos_lib.shard_for_process(config.data.split, s, shards)
    streams.append(
      streams_lib.pretrain_dataset(
        builder.as_dataset(split=sub, shuffle_files=False),
        builder.info.splits[sub].num_examples,
        batch_size=per_shard,
        view=view_spec(config, builder.info.features["video"].shape),
        seed=config.seed,
        start_step=start_step,
        cache=config.data.cache,
        cache_frame_size=config.data.cache_frame_size or None,
        shard_index=s,
      )
    )
  if len(streams) == 1:
    batches = streams[0]
  else:
    batches = tf.data.Dataset.zip(tuple(streams)).map(
      lambda *bs: {k: tf.concat([b[k] for b in bs], 0) for k in bs[0]}
    )
  return batches, builder.info.splits[config.data.split].num_examples
