"""From a config to this process's input: TFDS builder, shard, pipeline."""
from __future__ import annotations

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import datasets  # noqa: F401  (registers the builders)
from stclr_jax.data import pipeline
from stclr_jax.data import sampling
from stclr_jax.data.datasets import video_folder


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax
    return jax.process_index(), jax.process_count()
  return process_index, process_count


def prepared_builder(data: ml_collections.ConfigDict):
  """The TFDS builder named by ``data.name``, prepared (built once, then
  read from ``data.data_dir``)."""
  kw = {"data_dir": data.data_dir or None}
  if data.name.split("/")[0] == "video_folder":
    if not data.csv_path:
      raise ValueError("data.name=video_folder needs data.csv_path")
    kw["config"] = video_folder.VideoFolderConfig(
        name=data.name.split("/")[1] if "/" in data.name else "default",
        csv_path=data.csv_path)
    name = "video_folder"
  else:
    name = data.name
  builder = tfds.builder(name, **kw)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=data.manual_dir or None))
  return builder


def host_examples(data, split=None, process_index=None, process_count=None):
  """This process's disjoint share of ``split``: (dataset, size, builder)."""
  pi, pc = _process(process_index, process_count)
  builder = prepared_builder(data)
  sub = pipeline.shard_for_process(split or data.split, pi, pc)
  num = builder.info.splits[sub].num_examples
  ds = builder.as_dataset(split=sub, shuffle_files=False)
  return ds, num, builder


def spatial_augment(aug) -> augment_lib.SpatialAugment:
  return augment_lib.SpatialAugment(
      crop=aug.crop, crop_area=tuple(aug.crop_area),
      crop_aspect=tuple(aug.crop_aspect), flip=aug.flip, color=aug.color,
      color_strength=aug.color_strength, color_prob=aug.color_prob,
      grayscale_prob=aug.grayscale_prob)


def view_spec(config) -> pipeline.ViewSpec:
  modes = tuple(m.strip() for m in config.aug.temporal_modes.split(",")
                if m.strip())
  for m in modes:
    if m not in sampling.MODES:
      raise ValueError(f"config.aug.temporal_modes: unknown sampler {m!r}; "
                       f"choose from {sampling.MODES}")
  return pipeline.ViewSpec(clip_len=config.data.clip_len,
                           size=config.data.size, temporal_modes=modes,
                           spatial=spatial_augment(config.aug))


def local_batch_size(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{process_count} processes")
  return global_batch // process_count


def pretrain_input(config, *, start_step=0, process_index=None,
                   process_count=None) -> tuple[tf.data.Dataset, int]:
  """This host's pretraining batches and the *global* number of videos."""
  pi, pc = _process(process_index, process_count)
  ds, num, builder = host_examples(config.data, None, pi, pc)
  batches = pipeline.pretrain_dataset(
      ds, num, batch_size=local_batch_size(config.batch_size, pc),
      view=view_spec(config), seed=config.seed, start_step=start_step,
      cache=config.data.cache,
      cache_frame_size=config.data.cache_frame_size or None)
  return batches, builder.info.splits[config.data.split].num_examples
