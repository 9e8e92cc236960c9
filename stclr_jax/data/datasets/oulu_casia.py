"""Oulu-CASIA NIR&VIS facial expression database, read as distributed.

The data set cannot be downloaded automatically: request it from its authors
under its licence and pass its folder as ``manual_dir``::

  tfds.builder("oulu_casia", data_dir=..., config="vis_strong")
      .download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir="/data/Oulu-CASIA"))

Expected layout (``<image set>/`` is optional: ``OriginalImg`` or
``Cropped``, chosen by the config's ``cropped`` field)::

  <manual_dir>/[<image set>/]<modality>/<illumination>/
      <P001..P080>/<Expression>/<frame>.jpeg

``modality`` is ``VIS`` (folder ``VL`` or ``VIS``) or ``NIR`` (``NI`` or
``NIR``); illumination is ``Strong``, ``Weak`` or ``Dark``. Each expression
folder is one sequence, neutral to apex; all its frames are kept.

Bad input (an unknown expression folder, an empty sequence, a corrupt or
truncated image) raises an error naming the path; with ``skip_bad=True`` the
sequence is skipped instead and recorded, with its reason, in the dataset's
metadata (``info.metadata["skipped"]``) and printed.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from stclr_jax import video_io

EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
_MODALITY_DIRS = {"VIS": ("VL", "VIS"), "NIR": ("NI", "NIR")}
_IMAGE_SET_DIRS = {False: ("OriginalImg", "Original"), True: ("Cropped",)}


@dataclasses.dataclass
class OuluCasiaConfig(tfds.core.BuilderConfig):
  modality: str = "VIS"
  illumination: str = "Strong"
  cropped: bool = False
  skip_bad: bool = False


def _find_dir(parent: str, candidates, what: str) -> str:
  if not os.path.isdir(parent):
    raise video_io.BadInputError(f"{parent}: folder not found")
  entries = {e.lower(): e for e in os.listdir(parent)}
  for c in candidates:
    if c.lower() in entries:
      return os.path.join(parent, entries[c.lower()])
  raise video_io.BadInputError(
    f"{parent}: no {what} folder (looked for {', '.join(candidates)}; "
    f"found {', '.join(sorted(os.listdir(parent))) or 'nothing'})"
  )


def sequence_root(manual_dir: str, cfg: OuluCasiaConfig) -> str:
  """``<manual_dir>/[<image set>/]<modality>/<illumination>``."""
  if cfg.modality not in _MODALITY_DIRS:
    raise ValueError(
      f"modality must be one of {sorted(_MODALITY_DIRS)}, got {cfg.modality!r}"
    )
  root = manual_dir
  names = (
    {e.lower() for e in os.listdir(manual_dir)}
    if os.path.isdir(manual_dir)
    else set()
  )
  image_sets = _IMAGE_SET_DIRS[cfg.cropped]
  if any(n.lower() in names for n in image_sets):
    root = _find_dir(manual_dir, image_sets, "image set")
  root = _find_dir(root, _MODALITY_DIRS[cfg.modality], "modality")
  return _find_dir(root, (cfg.illumination,), "illumination")


class OuluCasia(tfds.core.GeneratorBasedBuilder):
  """Oulu-CASIA: 80 subjects x 6 expressions, neutral-to-apex sequences."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [
    OuluCasiaConfig(name="vis_strong", description="VIS, strong light"),
    OuluCasiaConfig(
      name="vis_strong_cropped",
      cropped=True,
      description="VIS, strong light, cropped faces",
    ),
    OuluCasiaConfig(
      name="nir_strong", modality="NIR", description="NIR, strong light"
    ),
  ]

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Video((None, None, None, 3)),
          "label": tfds.features.ClassLabel(names=EXPRESSIONS),
          "subject_id": tfds.features.Scalar(np.int32),
          "num_frames": tfds.features.Scalar(np.int32),
          "video_id": tfds.features.Text(),
        }
      ),
      supervised_keys=("video", "label"),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    return {
      "train": self._generate_examples(
        sequence_root(os.fspath(dl_manager.manual_dir), self.builder_config)
      )
    }

  def _generate_examples(self, root):
    cfg = self.builder_config
    skipped, count = [], 0
    subjects = sorted(
      s for s in os.listdir(root) if os.path.isdir(os.path.join(root, s))
    )
    for subject in subjects:
      m = re.fullmatch(r"P(\d+)", subject, flags=re.IGNORECASE)
      if not m:
        video_io.skip_or_raise(
          cfg.skip_bad,
          skipped,
          os.path.join(root, subject),
          video_io.BadInputError(
            f"{os.path.join(root, subject)}: not a "
            "subject folder (expected P001..P080)"
          ),
        )
        continue
      subject_dir = os.path.join(root, subject)
      for expr in sorted(os.listdir(subject_dir)):
        path = os.path.join(subject_dir, expr)
        if not os.path.isdir(path):
          continue
        try:
          if expr.lower() not in EXPRESSIONS:
            raise video_io.BadInputError(
              f"{path}: unknown expression folder {expr!r} (expected one "
              f"of {', '.join(e.capitalize() for e in EXPRESSIONS)})"
            )
          video = video_io.read_frame_folder(path)
        except video_io.BadInputError as e:
          video_io.skip_or_raise(cfg.skip_bad, skipped, path, e)
          continue
        key = f"{subject}_{expr.lower()}"
        count += 1
        yield (
          key,
          {
            "video": video,
            "label": expr.lower(),
            "subject_id": int(m.group(1)),
            "num_frames": len(video),
            "video_id": key,
          },
        )
    self.info.metadata["skipped"] = [list(s) for s in skipped]
    video_io.report_skipped(skipped, f"oulu_casia/{cfg.name}")
    if not count:
      raise video_io.BadInputError(f"{root}: empty split, no usable sequence")
