"""The augmentation preview (stclr_jax/data/preview.py): two views per
video, and the four views A | P | NA | NP with hard negatives; with
FaceSwap, which positives were swapped."""

import numpy as np
from PIL import Image

from configs import stclr_synthetic
from stclr_jax.data import preview


def test_grid_places_each_view_in_its_column():
  rng = np.random.default_rng(0)
  views = [rng.uniform(size=(2, 3, 5, 4, 3)) for _ in range(4)]
  img = preview.grid(*views, gap=2)
  assert img.shape == (2 * 5 + 2, 4 * 3 * 4 + 3 * 3 * 2, 3)
  for j, v in enumerate(views):
    x0 = j * (3 * 4 + 3 * 2)
    for i in range(2):
      y0 = i * (5 + 2)
      frames = np.concatenate(list(v[i]), axis=1)
      np.testing.assert_array_equal(
        img[y0 : y0 + 5, x0 : x0 + 12],
        np.clip(frames * 255 + 0.5, 0, 255).astype(np.uint8),
      )


def test_preview_shows_four_views_with_hard_negatives(tmp_path):
  c = stclr_synthetic.get_config("tiny=1")
  c.data.data_dir = str(tmp_path / "tfds")
  sizes = {}
  for hard in (False, True):
    c.pretext.hardneg.enabled = hard
    out = preview.write_preview(c, str(tmp_path / f"{hard}.png"), 2)
    sizes[hard] = Image.open(out).size
  t, s, gap = c.data.clip_len, c.data.size, 4
  assert sizes[False] == (2 * t * s + 3 * gap, 2 * s + gap)
  assert sizes[True] == (4 * t * s + 9 * gap, 2 * s + gap)


def test_the_preview_of_face_swaps_says_which_positives_were_swapped(
  tmp_path,
):
  c = stclr_synthetic.get_config("tiny=1,pretext=hardneg+faceswap")
  c.data.data_dir = str(tmp_path / "tfds")
  c.pretext.faceswap.probability = 1.0
  c.pretext.faceswap.hard_probability = 0.0
  batch = preview.preview_batch(c, 2)
  assert preview.swaps(batch) == (
    "row 1: P swapped, NP not drawn; row 2: P swapped, NP not drawn"
  )
  out = preview._write(batch, str(tmp_path / "swap.png"))
  t, s, gap = c.data.clip_len, c.data.size, 4
  assert Image.open(out).size == (4 * t * s + 9 * gap, 2 * s + gap)
