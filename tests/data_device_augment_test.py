"""The device path's augmentation (stclr_jax/data/device_augment.py) equals
the host path's (stclr_jax/data/augment.py): per op, end to end from the
same draws, and through the pretraining stream, which still resumes exactly.

The tolerances: both paths compute in float32, in different orders (XLA
may fuse a multiply and an add into one rounding; the clip's mean
luminance is summed in another order; tf.image.rgb_to_grayscale is a
matrix product). The measured worst cases are printed beside each bound; a
wrong pixel, a wrong sampling coordinate or a wrong branch moves a value by
at least 1/255 = 3.9e-3 (one grey level) and usually by far more."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment as augment_lib
from stclr_jax.data import device_augment as dev
from stclr_jax.data import streams
from stclr_jax.data import views as views_lib
from stclr_jax.pretext import options

# Per op: float32 rounding of values in [0, 1] (ulp 6e-8 near 1). Worst
# measured: crop 2.4e-7 (5 frame sizes x 40 boxes), hue 6e-8 (45 shifts),
# contrast and saturation 0.
OP_ATOL = 1e-6
# End to end, the crop's rounding amplified by up to three factors of up
# to 1.8 (brightness, contrast, saturation at strength 1): the worst of
# 1,200 measured clips (3 frame sizes x 4 configs x 100 seeds) was 1.8e-6.
END_ATOL = 5e-6


def _clip(t=3, h=40, w=52, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), np.uint8)


@pytest.mark.parametrize(
  "h,w,size", [(40, 52, 32), (64, 64, 112), (112, 112, 48)]
)
def test_crop_resize_equals_tf_crop_and_resize(h, w, size):
  """Random boxes of the host's own draw, and the whole frame: at 64 ->
  112, TensorFlow's last row and column round past the frame and are 0;
  the coordinates say so, and the device path writes the same 0."""
  clip = _clip(h=h, w=w)
  x = augment_lib.to_float(tf.constant(clip))
  crop = jax.jit(dev.crop_resize)
  boxes = [tf.constant([0.0, 0.0, 1.0, 1.0])] + [
    augment_lib.random_crop_box(h, w, tf.constant([s, 1], tf.int64))
    for s in range(12)
  ]
  zeros = 0
  for box in boxes:
    want = augment_lib._resize_box(x, box, size).numpy()
    coords = augment_lib.crop_coords(box, h, w, size).numpy()
    got = np.asarray(crop(clip, coords))
    np.testing.assert_allclose(got, want, atol=OP_ATOL, rtol=0)
    zeros += int((coords < 0).sum())
  if (h, size) == (64, 112):
    assert zeros >= 2  # the whole frame's last row and column


def test_each_colour_op_equals_tensorflows():
  """Brightness, contrast (towards the clip's mean luminance), saturation
  and hue, on random pixels with ties (equal channels, greys) and the
  hue's wrap-around, for factors and shifts over their ranges."""
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
  x[0, :4, :, 1] = x[0, :4, :, 0]  # r == g
  x[0, 4:8, :, 2] = x[0, 4:8, :, 1]  # g == b
  x[0, 8:12] = x[0, 8:12, :, :1]  # grey
  x = x / 255.0
  tx = tf.constant(x)
  gray = lambda v: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(v))
  mean = lambda v: tf.reduce_mean(tf.image.rgb_to_grayscale(v))
  for f in (0.2, 0.9, 1.0, 1.7):
    pairs = [
      (dev.adjust_brightness(x, f), tx * f),
      (dev.adjust_contrast(x, f), (tx - mean(tx)) * f + mean(tx)),
      (dev.adjust_saturation(x, f), gray(tx) + (tx - gray(tx)) * f),
    ]
    for got, want in pairs:
      np.testing.assert_allclose(got, want.numpy(), atol=OP_ATOL, rtol=0)
  for delta in (-0.2, -0.07, 0.0, 0.13, 0.2, 0.5, -0.5, 0.99):
    got = jax.jit(dev.adjust_hue)(x, delta)
    want = tf.image.adjust_hue(tx, delta).numpy()
    np.testing.assert_allclose(got, want, atol=OP_ATOL, rtol=0)
  np.testing.assert_allclose(
    dev.grayscale(x), tf.image.rgb_to_grayscale(tx).numpy(), atol=OP_ATOL
  )


def test_a_flip_mirrors_the_coordinates_exactly():
  clip = _clip()
  box = augment_lib.random_crop_box(40, 52, tf.constant([3, 1], tf.int64))
  coords = augment_lib.crop_coords(box, 40, 52, 32).numpy()
  params = np.zeros(dev.NUM_PARAMS, np.float32)
  params[dev.ORDER] = np.arange(4)
  plain = np.asarray(dev.augment_clip(clip, coords, params))
  params[dev.FLIP] = 1
  flipped = np.asarray(dev.augment_clip(clip, coords, params))
  np.testing.assert_array_equal(flipped, plain[:, :, ::-1])


@pytest.mark.parametrize(
  "cfg",
  [
    augment_lib.SpatialAugment(),
    augment_lib.SpatialAugment(crop_area=(0.3, 1.0), color_strength=0.5),
    augment_lib.SpatialAugment(color=False),
    augment_lib.SpatialAugment(crop=False, flip=False, grayscale_prob=0.5),
  ],
  ids=["paper", "synthetic", "no_color", "no_crop_no_flip"],
)
def test_device_path_equals_host_path_from_the_same_draws(cfg):
  """``augment.augment_clip`` (the host path) against ``draw_params`` ->
  ``device_params`` -> ``device_augment.augment_clip``, 48 seeds: both
  paths read one draw, so every branch (flip, jitter, the op order,
  grayscale) is the same one; the seeds cover each branch both ways."""
  clip = _clip(t=3, h=40, w=52, seed=2)
  f = jax.jit(dev.augment_clip)
  seen = np.zeros((3, 2), int)  # flip, jitter, gray: off / on
  for s in range(48):
    seed = tf.constant([s, 5], tf.int64)
    want = augment_lib.augment_clip(tf.constant(clip), seed, 32, cfg).numpy()
    p = augment_lib.draw_params(40, 52, seed, cfg)
    coords, vec = augment_lib.device_params(p, 40, 52, 32)
    got = np.asarray(f(clip, coords.numpy(), vec.numpy()))
    np.testing.assert_allclose(got, want, atol=END_ATOL, rtol=0)
    for i, k in enumerate((dev.FLIP, dev.JITTER, dev.GRAY)):
      seen[i, int(vec[k])] += 1
  for i, on in enumerate((cfg.flip, cfg.color, cfg.color)):
    assert seen[i, 1] > 0 if on else seen[i, 1] == 0, seen


def _videos(sizes, seed=0):
  rng = np.random.default_rng(seed)
  vids = [
    rng.integers(0, 256, (int(rng.integers(6, 14)), h, w, 3), np.uint8)
    for h, w in sizes
  ]

  def gen():
    for i, v in enumerate(vids):
      yield {"video": v, "subject_id": i}

  h = sizes[0][0] if len({s[0] for s in sizes}) == 1 else None
  w = sizes[0][1] if len({s[1] for s in sizes}) == 1 else None
  sig = {
    "video": tf.TensorSpec([None, h, w, 3], tf.uint8),
    "subject_id": tf.TensorSpec([], tf.int64),
  }
  return tf.data.Dataset.from_generator(gen, output_signature=sig)


def _stream(ds, n, placement, start=0, **view):
  spec = views_lib.ViewSpec(clip_len=4, size=16, placement=placement, **view)
  d = streams.pretrain_dataset(
    ds, n, batch_size=3, view=spec, seed=4, start_step=start
  )
  return list(d.take(4 - start).as_numpy_iterator())


_AUGMENT = jax.jit(dev.augment_views)


def _on_device(batch):
  shipped = {k: v for k, v in batch.items() if k != "subject_id"}
  return {k: np.asarray(v) for k, v in _AUGMENT(shipped).items()}


@pytest.mark.parametrize("hard", [False, True])
def test_the_pipelines_device_path_equals_its_host_path_and_resumes(hard):
  """The stream ships uint8 frames at their cached size and the draws;
  applied on the device they equal the host path's views, batch for
  batch (4 batches over two epochs), and a resumed stream ships the same
  batches. ``hard``: with TimeAug and HardNeg's four clips per video."""
  opts = {}
  if hard:
    opts["pretext"] = options.Pretext(
      timeaug=options.TemporalShift(offsets=(0.04,), weights=(1,)),
      hardneg=options.HardNegatives(gap=0.12),
    )
  sizes = [(24, 30)] * 6
  host = _stream(_videos(sizes), 6, "host", **opts)
  shipped = _stream(_videos(sizes), 6, "device", **opts)
  views = ("view_a", "view_b") + (("hard_a", "hard_b") if hard else ())
  for h, s in zip(host, shipped):
    for k in views:
      assert s[k].dtype == np.uint8 and s[k].shape == (3, 4, 24, 30, 3)
      assert s[f"{k}_crop"].shape == (3, 2, 16)
      assert s[f"{k}_aug"].shape == (3, dev.NUM_PARAMS)
    got = _on_device(s)
    for k in views:
      np.testing.assert_allclose(got[k], h[k], atol=END_ATOL, rtol=0)
    np.testing.assert_array_equal(s["subject_id"], h["subject_id"])
  for x, y in zip(shipped[2:], _stream(_videos(sizes), 6, "device", 2, **opts)):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_frames_of_several_sizes_ship_padded_and_too_large_is_an_error():
  """Frames smaller than the ship size are zero-padded at the bottom and
  right; the coordinates never reach the padding, so the views equal the
  host path's. Without a static frame size, or with a frame larger than
  the ship size, the error names config.aug.ship_size."""
  sizes = [(24, 30), (20, 30), (24, 26), (18, 22), (24, 30), (22, 28)]
  host = _stream(_videos(sizes), 6, "host")
  shipped = _stream(_videos(sizes), 6, "device", ship_size=(24, 30))
  for h, s in zip(host, shipped):
    assert s["view_a"].shape == (3, 4, 24, 30, 3)
    got = _on_device(s)
    for k in ("view_a", "view_b"):
      np.testing.assert_allclose(got[k], h[k], atol=END_ATOL, rtol=0)
  with pytest.raises(ValueError, match="config.aug.ship_size"):
    _stream(_videos(sizes), 6, "device")
  with pytest.raises(tf.errors.InvalidArgumentError, match="ship_size"):
    _stream(_videos(sizes), 6, "device", ship_size=(20, 30))
  with pytest.raises(ValueError, match="placement 'gpu' unknown"):
    views_lib.ViewSpec(placement="gpu")


def test_ship_size_follows_the_cache_size():
  assert views_lib.ship_size((None, 240, 320, 3), 256, None) == (256, 341)
  assert views_lib.ship_size((None, 64, 64, 3), 0, None) == (64, 64)
  assert views_lib.ship_size((None, None, None, 3), 0, (30, 40)) == (30, 40)


def test_the_config_switch_and_its_default():
  """``aug.placement``: "auto" is the host on CPU (where the device is the
  same cores) and the device elsewhere; bad values name the field."""
  from configs import stclr_oulu
  from stclr_jax.data import input as input_lib

  c = stclr_oulu.get_config()
  assert c.aug.placement == "auto" and tuple(c.aug.ship_size) == (0, 0)
  assert jax.default_backend() == "cpu"
  assert input_lib.view_spec(c).placement == "host"
  assert input_lib.view_spec(c).ship_size is None
  c.aug.placement, c.aug.ship_size = "device", (256, 341)
  spec = input_lib.view_spec(c)
  assert spec.placement == "device" and spec.ship_size == (256, 341)
  # On an accelerator, "auto" is the device, unless the ship size is
  # unknown (Oulu-CASIA's frames have no static size): then the host.
  c.aug.placement, c.aug.ship_size = "auto", (0, 0)
  real = jax.default_backend
  try:
    jax.default_backend = lambda: "gpu"
    assert input_lib.placement(c.aug, (None, 64, 64, 3)) == "device"
    assert input_lib.placement(c.aug, (None, None, None, 3)) == "host"
    c.aug.ship_size = (256, 341)
    assert input_lib.placement(c.aug, (None, None, None, 3)) == "device"
  finally:
    jax.default_backend = real
  c.aug.placement = "tpu"
  with pytest.raises(ValueError, match="config.aug.placement"):
    input_lib.view_spec(c)
  c.aug.placement, c.aug.ship_size = "device", (256, 0)
  with pytest.raises(ValueError, match="config.aug.ship_size"):
    input_lib.view_spec(c)
