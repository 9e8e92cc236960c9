"""MaskFN's frozen descriptors (stclr_jax/descriptors.py): HOG equals
scikit-image's, its bins do not depend on rounding, and the crops'
descriptors carry no gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.feature import hog as skimage_hog

from stclr_jax import descriptors


def _image(shape, seed):
  """Random uint8 pixels with flat patches and a black bar: zero and
  axis-aligned gradients, the ties of the orientation binning."""
  img = np.random.default_rng(seed).integers(0, 256, shape)
  img[5:15, 5:15] = 128
  img[20:22, :] = 0
  return img


@pytest.mark.parametrize(
  "shape,cells", [((64, 64, 3), 3), ((48, 48, 3), 2), ((24, 24, 1), 3)]
)
def test_hog_equals_scikit_image(shape, cells):
  """Equal to ``skimage.feature.hog`` (L2-Hys, channel of the largest
  gradient) to 1e-6. Why not 1e-12: scikit-image sums each cell in float32
  (its Cython ``cell_hog``; its cell histograms differ from a float64 sum
  by ~1e-8), and we compute on 0-255 where it gets 0-1, which only moves
  the L2-Hys epsilon's weight by ~1e-10. A vote in a wrong bin would move
  an entry by ~1e-2, far above the tolerance."""
  img = _image(shape, 0)
  want = skimage_hog(
    img.astype(np.float64) / 255,
    cells_per_block=(cells, cells),
    channel_axis=-1,
  )
  with jax.enable_x64(True):
    got = descriptors.hog(jnp.asarray(img, jnp.float64), cells_per_block=cells)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


def test_hog_bins_do_not_depend_on_rounding():
  """float32 eager, float32 jitted and float64 agree to float32 rounding
  of the magnitudes: no vote changes bin (arctan2's last ulp would)."""
  img = _image((2, 32, 32, 3), 1)
  eager = np.asarray(descriptors.hog(jnp.asarray(img, jnp.float32)))
  jitted = np.asarray(jax.jit(descriptors.hog)(jnp.asarray(img, jnp.float32)))
  with jax.enable_x64(True):
    f64 = np.asarray(descriptors.hog(jnp.asarray(img, jnp.float64)))
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  np.testing.assert_allclose(eager, f64, atol=1e-6)


def test_hog_errors_name_the_problem():
  with pytest.raises(ValueError, match="square"):
    descriptors.hog(jnp.zeros((16, 24, 3)))
  with pytest.raises(ValueError, match="fewer than a block"):
    descriptors.hog(jnp.zeros((16, 16, 3)))


@pytest.mark.parametrize("kind", descriptors.KINDS)
def test_part_descriptors_concatenate_the_parts_without_gradient(kind):
  crops = _image((3, 2, 24, 24, 3), 2).astype(np.uint8)
  d = descriptors.part_descriptors(jnp.asarray(crops), kind)
  per_part = {"hog": 3 * 3 * 9, "pixels": 24 * 24}[kind]
  assert d.shape == (3, 2 * per_part)
  if kind == "hog":  # each part's HOG, eyes then mouth
    want = descriptors.hog(jnp.asarray(crops[1, 1], jnp.float32))
    np.testing.assert_allclose(d[1, per_part:], want, atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(descriptors.part_descriptors(x, kind)))(
    jnp.asarray(crops, jnp.float32)
  )
  assert float(jnp.abs(grad).max()) == 0.0


def test_unknown_descriptor_is_an_error():
  with pytest.raises(ValueError, match="'resnet' unknown"):
    descriptors.part_descriptors(jnp.zeros((1, 2, 24, 24, 3)), "resnet")
