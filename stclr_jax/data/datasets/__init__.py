"""TFDS builders, registered on import: ``oulu_casia`` (manual_dir),
``video_folder`` (CSV of videos or frame folders) and the built-in
``synthetic_expressions``."""

from stclr_jax.data.datasets import (
  oulu_casia,  # noqa: F401
  synthetic_expressions,  # noqa: F401
  video_folder,  # noqa: F401
)
