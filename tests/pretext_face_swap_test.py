"""SSL-FER's FaceSwap on clips (stclr_jax/pretext/face_swap.py, its heads
and its place in the stream: data/views.py, data/streams.py): the fit,
the warp, the mask, the colour, the statuses, and the stream's one head
per clip of another subject, deterministic and resumable. (8 devices
equal 1 in float64 on its batches: tests/train_step_test.py.)"""

import numpy as np
import pytest
import tensorflow as tf

from stclr_jax.data import augment, streams, videos, views
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import face_swap, options

# Five keypoints (eyes, nose, mouth corners) of a face in a 32 x 32 frame.
FACE = np.array(
  [[11, 12], [21, 12], [16, 17.5], [12.5, 22], [19.5, 22]], np.float32
)
_PLAIN = augment.SpatialAugment(crop=False, flip=False, color=False)


def _np_umeyama(src, dst):
  """Umeyama's least-squares similarity ``dst ~ s R src + t`` with the
  reflection excluded (det R = +1), by SVD: ``(a, b)`` as complex."""
  ms, md = src.mean(0), dst.mean(0)
  cs, cd = src - ms, dst - md
  u, sig, vt = np.linalg.svd(cd.T @ cs / len(src))
  d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
  r = u @ d @ vt
  s = np.trace(np.diag(sig) @ d) / (cs**2).sum(1).mean()
  t = md - s * r @ ms
  return complex(s * r[0, 0], s * r[1, 0]), complex(*t)


def _np_bilinear(img, x, y):
  """``img`` (H, W, C) sampled at (x, y) index coordinates, edges
  clamped (OpenCV's / TF's bilinear with a nearest fill)."""
  h, w = img.shape[:2]
  x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  f = img.astype(np.float64)
  top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
  bot = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
  return top * (1 - fy) + bot * fy


def _similar(points, scale, angle, shift):
  z = points[:, 0] + 1j * points[:, 1]
  z = scale * np.exp(1j * angle) * z + complex(*shift)
  return np.stack([z.real, z.imag], 1).astype(np.float32)


def test_the_fit_is_umeyamas_and_never_a_reflection():
  rng = np.random.default_rng(0)
  for _ in range(5):
    src = rng.uniform(0, 32, (5, 2))
    dst = _similar(src, 1.3, 0.4, (3, -2)) + rng.normal(0, 0.5, (5, 2))
    mirrored = src * [-1, 1] + rng.normal(0, 0.5, (5, 2))
    for target in (dst, mirrored):
      a, b = face_swap.similarity(src[None], target[None])
      ra, rb = _np_umeyama(src, target)
      np.testing.assert_allclose(complex(a.numpy()[0]), ra, atol=1e-5)
      np.testing.assert_allclose(complex(b.numpy()[0]), rb, atol=1e-3)
  # An exact similarity is recovered exactly (to float32).
  a, b = face_swap.similarity(
    FACE[None], _similar(FACE, 2.0, 0.0, (3, 3))[None]
  )
  np.testing.assert_allclose(a.numpy(), [2.0], atol=1e-6)
  np.testing.assert_allclose(b.numpy(), [3 + 3j], atol=1e-5)


def test_the_mask_is_the_face_frames_polygons():
  """Pixels by hand: the eye band spans 0.85 d either side of the eye
  midpoint (16, 12), d = 10, from 5.5 above to 2.5 below; the mouth
  region reaches 4.5 below the corners; cheeks and corners are out."""
  m = face_swap.face_mask(FACE, 32, 32).numpy()
  inside = [(12, 16), (7, 8), (13, 23), (20, 16), (25, 16), (23, 12)]
  outside = [(5, 16), (12, 6), (12, 25), (27, 16), (2, 2), (20, 6), (30, 30)]
  assert all(m[y, x] == 1 for y, x in inside), m
  assert all(m[y, x] == 0 for y, x in outside), m
  # Polygons move with the face: a similarity of the keypoints moves
  # the mask the same way (here a shift by whole pixels).
  moved = face_swap.face_mask(FACE + [3, 2], 32, 32).numpy()
  np.testing.assert_array_equal(moved[2:, 3:], m[:-2, :-3])


def test_under_the_identity_the_composite_is_exact():
  """Head and source keypoints equal: the transform is the identity, so
  inside the mask every frame is the source's pixels and outside it the
  head's, exactly (colour correction off: it changes the source's
  pixels by design, tested below)."""
  rng = np.random.default_rng(1)
  src = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)
  head = rng.integers(0, 256, (32, 32, 3), np.uint8)
  kp = np.broadcast_to(FACE, (3, 5, 2))
  clip, status = face_swap.swap_clip(src, kp, head, FACE, colour=False)
  assert int(status) == face_swap.SWAPPED
  m = face_swap.face_mask(FACE, 32, 32).numpy().astype(bool)
  assert 100 < m.sum() < 32 * 32 / 2
  clip = clip.numpy()
  np.testing.assert_array_equal(clip[:, m], src[:, m])
  np.testing.assert_array_equal(
    clip[:, ~m], np.broadcast_to(head, src.shape)[:, ~m]
  )


def test_a_moved_face_is_warped_bilinearly_into_the_heads_frame():
  """The source's face is the head's moved by a known similarity (scale
  1.2, 0.25 rad, shifted): each output pixel inside the mask is the
  source sampled at the similarity's image of it, as a NumPy bilinear
  reference samples it, to the rounding of the output (<= 1 level)."""
  rng = np.random.default_rng(2)
  src = rng.integers(0, 256, (2, 40, 40, 3), np.uint8)
  head = rng.integers(0, 256, (32, 32, 3), np.uint8)
  src_kp = _similar(FACE, 1.2, 0.25, (2.0, -1.5))
  kp = np.stack([src_kp, _similar(FACE, 1.2, 0.2, (1.0, -1.0))])
  clip, status = face_swap.swap_clip(src, kp, head, FACE, colour=False)
  assert int(status) == face_swap.SWAPPED
  clip = clip.numpy().astype(np.float64)
  ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
  m_head = face_swap.face_mask(FACE, 32, 32).numpy().astype(bool)
  for t in range(2):
    a, b = _np_umeyama(FACE.astype(np.float64) - 0.5, kp[t] - 0.5)
    z = a * (xs + 1j * ys) + b
    ref = _np_bilinear(src[t], z.real, z.imag)
    err = np.abs(clip[t][m_head] - ref[m_head])
    assert err.max() <= 1.0, err.max()
    assert err.mean() < 0.3, err.mean()
    np.testing.assert_array_equal(
      clip[t][~m_head & (xs < 4)], head[~m_head & (xs < 4)]
    )


def _np_opencv_blur(img, k):
  """OpenCV's documented GaussianBlur(img, (k, k), 0): its fixed kernels
  for k <= 7, else a Gaussian of sigma 0.3 ((k - 1) / 2 - 1) + 0.8;
  borders reflected without the edge (NumPy's "reflect")."""
  small = {
    1: [1],
    3: [1, 2, 1],
    5: [1, 4, 6, 4, 1],
    7: [1, 6, 15, 20, 15, 6, 1],
  }
  r = k // 2
  if k in small:
    g = np.array(small[k], np.float64)
    g = (
      g / g.sum()
      if k != 7
      else np.array(
        [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]
      )
    )
  else:
    s = 0.3 * (r - 1) + 0.8
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * s * s))
    g = g / g.sum()
  p = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), "reflect")
  h, w = img.shape[:2]
  out = np.zeros(img.shape)
  for i in range(k):
    for j in range(k):
      out += g[i] * g[j] * p[i : i + h, j : j + w]
  return out


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 21])
def test_the_colour_blur_is_opencvs(k):
  img = np.random.default_rng(k).uniform(0, 255, (2, 30, 40, 3))
  got = face_swap.gaussian_blur(img, tf.constant(k)).numpy()
  for i in range(2):
    np.testing.assert_allclose(got[i], _np_opencv_blur(img[i], k), atol=2e-3)


def test_colour_takes_the_heads_tone_and_is_clipped_not_wrapped():
  kp = np.broadcast_to(FACE, (1, 5, 2))
  m = face_swap.face_mask(FACE, 32, 32).numpy().astype(bool)
  # Flat source and head: the ratio of blurs makes the source the head's.
  src = np.full((1, 32, 32, 3), 100, np.uint8)
  head = np.full((32, 32, 3), 180, np.uint8)
  clip, _ = face_swap.swap_clip(src, kp, head, FACE)
  np.testing.assert_allclose(clip.numpy()[0][m], 180, atol=1)
  # A bright patch in a dark source on a bright head: the corrected
  # value is about 250 * 250 / 40 (uint8 would wrap it to a dark value);
  # it is clipped to 255.
  src = np.full((1, 32, 32, 3), 30, np.uint8)
  src[0, 20:24, 14:18] = 250
  head = np.full((32, 32, 3), 250, np.uint8)
  clip, _ = face_swap.swap_clip(src, kp, head, FACE)
  assert (clip.numpy()[0, 20:24, 14:18] == 255).all()


def test_missing_keypoints_and_degenerate_transforms_leave_the_clip():
  rng = np.random.default_rng(3)
  src = rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
  head = rng.integers(0, 256, (32, 32, 3), np.uint8)
  kp = np.broadcast_to(FACE, (2, 5, 2)).copy()
  nan = np.full((5, 2), np.nan, np.float32)
  blind = FACE.copy()
  blind[1] = blind[0]  # both eyes on one point: d = 0
  tiny = FACE / 20 + 10  # scale 20 from head to source
  cases = [
    (kp, nan, face_swap.NO_KEYPOINTS),
    (kp * np.nan, FACE, face_swap.NO_KEYPOINTS),
    (kp, blind, face_swap.DEGENERATE),
    (kp, tiny, face_swap.DEGENERATE),
  ]
  for src_kp, head_kp, want in cases:
    clip, status = face_swap.swap_clip(src, src_kp, head, head_kp)
    assert int(status) == want
    np.testing.assert_array_equal(clip.numpy(), src)


def test_keypoints_are_filled_from_the_nearest_frame_and_smoothed():
  kp = np.stack([FACE + i for i in range(6)]).astype(np.float32)
  kp[2] = np.nan
  out, found = face_swap.smooth_keypoints(kp, 1)
  assert bool(found)
  filled = kp.copy()
  filled[2] = kp[1]  # nearest, the earlier one on a tie
  ref = np.stack([filled[max(t - 1, 0) : t + 2].mean(0) for t in range(6)])
  np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
  const = np.broadcast_to(FACE, (5, 5, 2))
  np.testing.assert_array_equal(face_swap.smooth_keypoints(const, 2)[0], const)
  out, found = face_swap.smooth_keypoints(np.full((3, 5, 2), np.nan), 2)
  assert not bool(found) and np.isnan(out.numpy()).all()


def _stamped(n, subjects, t=6, size=32):
  """``n`` videos of ``t`` flat frames (red: 15 i + 10, the video; green:
  10 k + 5, the frame), each with the :data:`FACE` keypoints."""

  def gen():
    for i in range(n):
      v = np.zeros((t, size, size, 3), np.uint8)
      v[..., 0] = 15 * i + 10
      v[..., 1] = (10 * np.arange(t) + 5)[:, None, None]
      yield {
        "video": v,
        "subject_id": subjects[i],
        "keypoints": np.broadcast_to(FACE * size / 32, (t, 5, 2)),
      }

  sig = {
    "video": tf.TensorSpec([t, size, size, 3], tf.uint8),
    "subject_id": tf.TensorSpec([], tf.int64),
    "keypoints": tf.TensorSpec([t, 5, 2], tf.float32),
  }
  return tf.data.Dataset.from_generator(gen, output_signature=sig)


def _stream(pretext, n=8, subjects=None, start_step=0, placement="host"):
  subjects = list(range(n)) if subjects is None else subjects
  spec = views.ViewSpec(
    clip_len=4, size=32, spatial=_PLAIN, pretext=pretext, placement=placement
  )
  return streams.pretrain_dataset(
    _stamped(n, subjects),
    n,
    batch_size=4,
    view=spec,
    seed=3,
    start_step=start_step,
  )


def test_each_swapped_clip_has_one_head_of_another_subject():
  """Flat stamped videos, no spatial augmentation: outside the mask a
  swapped positive is its head frame (one video's red, one frame's green,
  the same in all its frames, of another subject); inside, its own
  video's frames. The hard pair's positive is left (q = 0) and counted
  as not drawn."""
  subjects = [0, 0, 1, 1, 2, 2, 3, 3]
  swap = options.FaceSwap(probability=1.0, hard_probability=0.0, colour=False)
  pretext = options.Pretext(faceswap=swap, hardneg=options.HardNegatives(0.08))
  m = face_swap.face_mask(FACE, 32, 32).numpy().astype(bool)
  heads = set()
  for batch in _stream(pretext, subjects=subjects).take(6).as_numpy_iterator():
    np.testing.assert_array_equal(
      batch[batch_lib.FACE_SWAP],
      [[face_swap.SWAPPED, face_swap.NOT_DRAWN]] * 4,
    )
    for i in range(4):
      own = (round(batch["view_a"][i, 0, 0, 0, 0] * 255) - 10) // 15
      b = np.round(batch["view_b"][i] * 255).astype(int)
      out = b[:, ~m]
      assert (out == out[0, :1]).all()  # one head frame, held
      head = (out[0, 0, 0] - 10) // 15
      assert subjects[head] != subjects[own]
      heads.add(head)
      assert (b[:, m][..., 0] == 15 * own + 10).all()  # the own face
      hb = np.round(batch["hard_b"][i] * 255).astype(int)
      assert (hb[..., 0] == 15 * own + 10).all()  # left as it was
  assert len(heads) > 3


def test_heads_of_unlabelled_videos_are_other_videos_and_one_subject_fails():
  base = _stamped(4, [-1] * 4).map(
    lambda e: {**e, "subject_id": tf.cast(e["subject_id"], tf.int32)}
  )
  store = videos.VideoStore(base, 4, "test")
  heads = views.Heads(store, "test")
  for k in range(40):
    _, kp, j = heads.draw(-1, k % 4, tf.constant([k, 1], tf.int64))
    assert int(j) != k % 4
    np.testing.assert_array_equal(kp, FACE)
  single = videos.VideoStore(_stamped(3, [5] * 3), 3, "test")
  with pytest.raises(ValueError, match="all of subject 5"):
    views.Heads(single, "FaceSwap (data shard 0)")


@pytest.mark.parametrize("placement", ["host", "device"])
def test_the_stream_is_deterministic_and_resumes_exactly(placement):
  pretext = options.Pretext(
    faceswap=options.FaceSwap(), timeaug=options.TemporalShift()
  )
  full = list(_stream(pretext, placement=placement).take(5).as_numpy_iterator())
  again = list(
    _stream(pretext, placement=placement).take(5).as_numpy_iterator()
  )
  resumed = list(
    _stream(pretext, start_step=3, placement=placement)
    .take(2)
    .as_numpy_iterator()
  )
  statuses = np.concatenate([b[batch_lib.FACE_SWAP] for b in full])
  assert set(statuses.ravel()) == {face_swap.NOT_DRAWN, face_swap.SWAPPED}
  for x, y in zip(full, again):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  for x, y in zip(full[3:], resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def swapped_batch():
  """The step's inputs of a batch of 8 videos as the FaceSwap stream makes
  it, hard negatives on and both positives swapped (4 clips of 4 x 32 x
  32 per video, as tests/_helpers_step.batch(hard=True)):
  train_step_test's float64 test of 8 devices against 1 steps on it too."""
  swap = options.FaceSwap(probability=1.0, hard_probability=1.0)
  pretext = options.Pretext(faceswap=swap, hardneg=options.HardNegatives(0.08))
  two = next(_stream(pretext, n=16).batch(2).as_numpy_iterator())
  host = {k: v.reshape(8, *v.shape[2:]) for k, v in two.items()}
  assert (host[batch_lib.FACE_SWAP] == face_swap.SWAPPED).all()
  return pretext.schema().model_inputs(host)


def test_counts_are_shares_of_the_positives():
  counts = batch_lib.Counts()
  counts.add({batch_lib.FACE_SWAP: np.array([[1, 0], [1, 2], [3, 1]])})
  assert counts.read() == {
    "pretext/face_swap_not_drawn": 1 / 6,
    "pretext/face_swap_swapped": 3 / 6,
    "pretext/face_swap_no_keypoints": 1 / 6,
    "pretext/face_swap_degenerate": 1 / 6,
  }
  assert counts.read() == {}
  swap = options.Pretext(faceswap=options.FaceSwap())
  assert swap.counters() == tuple(
    f"pretext/face_swap_{s}" for s in batch_lib.SWAP_STATUSES
  )
