"""Bring your own videos: raw videos -> face-cropped clips and a manifest.

An offline tool, run as ``python -m stclr_jax.prepare`` (``cli.py`` tells
its flags and outputs); its ``manifest.csv`` is what the ``video_folder``
data set reads (``stclr_jax.manifest``). Modules:

* ``sources``: the inputs under a folder or in a CSV, their labels (or
  none: unlabelled videos, for pretraining), ids, fingerprints;
* ``detectors``: face detectors (MTCNN and others);
* ``tracking``: per-frame detections -> one steady face box per frame;
* ``settings``: what decides the output (a change redoes an input);
* ``clip``: one input decoded, tracked, cropped and recorded;
* ``run``: the resumable, parallel run over all inputs;
* ``report``: the run's summary and tables;
* ``cli``: the command line.

Videos are read by ``stclr_jax.video_io``, as the data sets read them.
"""

from __future__ import annotations

from stclr_jax.prepare.clip import crop, load_done, process
from stclr_jax.prepare.detectors import DETECTORS, FaceDetector, make_detector
from stclr_jax.prepare.report import Summary, write_tables
from stclr_jax.prepare.run import DetectorError, prepare
from stclr_jax.prepare.settings import Settings
from stclr_jax.prepare.sources import Item, find_inputs, fingerprint
from stclr_jax.prepare.tracking import TrackParams, follow

__all__ = [
  "DETECTORS",
  "DetectorError",
  "FaceDetector",
  "Item",
  "Settings",
  "Summary",
  "TrackParams",
  "crop",
  "find_inputs",
  "fingerprint",
  "follow",
  "load_done",
  "make_detector",
  "prepare",
  "process",
  "write_tables",
]
