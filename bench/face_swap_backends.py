"""Benchmark: FaceSwap's per-clip work in TF ops (the library's
stclr_jax/pretext/face_swap.py, as tf.data runs it) against the same
steps through OpenCV and NumPy (the way SSL-FER's code does them, and
what a ``tf.numpy_function`` would call), on one core each.

Per clip of ``--clip_len`` frames at ``--size`` pixels: a similarity per
frame from five keypoints, the bilinear warp of the source frame into the
head's, the two polygons of the mask (the head's and the source's), the
Gaussian colour ratio and the composite. Both backends get the same
frames, keypoints and transforms; the run prints clips/s on one core for
each and how far their outputs are apart (grey levels; OpenCV rounds its
bilinear weights to 1/32 and rasterises polygons by its own rule, so they
are close, not equal).

  python bench/face_swap_backends.py [--size 128 --clip_len 16 --clips 200]

OpenCV is not a dependency of the library: ``pip install
opencv-python-headless`` to run the OpenCV side. The run ends with the
machine's load (bench/timing.py).
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

# The synthetic face's five keypoints in a 32 px frame, scaled to --size.
FACE = np.array(
  [[11, 12], [21, 12], [16, 17.5], [12.5, 22], [19.5, 22]], np.float32
)


def _data(size, clip_len, seed=0):
  """A source clip whose face drifts and turns, a head frame with the face
  a little smaller elsewhere, and their keypoints."""
  rng = np.random.default_rng(seed)
  src = rng.integers(0, 256, (clip_len, size, size, 3), np.uint8)
  head = rng.integers(0, 256, (size, size, 3), np.uint8)
  base = FACE * size / 32
  kp = []
  for t in range(clip_len):
    a = 1.05 * np.exp(1j * 0.01 * t)
    z = (base[:, 0] + 1j * base[:, 1] - size / 2) * a + size / 2 + 0.3 * t
    kp.append(np.stack([z.real, z.imag], 1))
  hz = (base[:, 0] + 1j * base[:, 1] - size / 2) * 0.9 + size / 2 + 2
  head_kp = np.stack([hz.real, hz.imag], 1).astype(np.float32)
  return src, np.array(kp, np.float32), head, head_kp


def _opencv_swap(cv2, face_swap, src, kp, head, head_kp):
  """The same steps as face_swap.swap_clip, through OpenCV and NumPy (the
  polygons' vertices and the transforms from the library's NumPy-free
  maths, evaluated eagerly here: they are a few dozen numbers)."""
  import tensorflow as tf

  a, b = face_swap.similarity(
    np.broadcast_to(head_kp - 0.5, kp.shape), kp - 0.5
  )
  a, b = a.numpy(), b.numpy()
  back = (
    face_swap._real(
      (face_swap._complex(kp - 0.5) - b[:, None]) / a[:, None]
    ).numpy()
    + 0.5
  )
  polys_head = [p.numpy() for p in face_swap.polygons(head_kp)]
  polys_src = [p.numpy() for p in face_swap.polygons(back)]
  size = int(face_swap.blur_size(tf.constant(head_kp)))
  h, w = head.shape[:2]
  head_f = head.astype(np.float32)
  blur_head = cv2.GaussianBlur(head_f, (size, size), 0)

  def mask_of(polys):
    m = np.zeros((h, w), np.uint8)
    for p in polys:
      # Pixel centres at +0.5: shift to OpenCV's integer-centred grid.
      pts = np.round((p - 0.5) * 16).astype(np.int32)
      cv2.fillPoly(m, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return m

  m_head = mask_of(polys_head)
  out = np.empty((len(src), h, w, 3), np.uint8)
  for t in range(len(src)):
    m = np.maximum(m_head, mask_of([p[t] for p in polys_src]))
    mat = np.array(
      [[a[t].real, -a[t].imag, b[t].real], [a[t].imag, a[t].real, b[t].imag]],
      np.float32,
    )
    warped = cv2.warpAffine(
      src[t].astype(np.float32),
      mat,
      (w, h),
      flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
      borderMode=cv2.BORDER_REPLICATE,
    )
    ratio = blur_head / np.maximum(cv2.GaussianBlur(warped, (size, size), 0), 1)
    corrected = np.clip(warped * ratio, 0, 255)
    m3 = m[..., None].astype(np.float32)
    out[t] = np.clip(
      np.round(head_f * (1 - m3) + corrected * m3), 0, 255
    ).astype(np.uint8)
  return out


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--clip_len", type=int, default=16)
  p.add_argument("--clips", type=int, default=100)
  a = p.parse_args()
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  import timing

  from stclr_jax.pretext import face_swap

  src, kp, head, head_kp = _data(a.size, a.clip_len)
  swap = tf.function(face_swap.swap_clip)
  args = [tf.constant(x) for x in (src, kp, head, head_kp)]
  print(
    f"one core each; a clip of {a.clip_len} frames of {a.size}x{a.size}, "
    f"{a.clips} clips"
  )
  with timing.MachineLoad() as load:
    ours, status = swap(*args)  # traces
    assert int(status) == face_swap.SWAPPED
    t0 = time.perf_counter()
    for _ in range(a.clips):
      swap(*args)[0].numpy()
    tf_rate = a.clips / (time.perf_counter() - t0)
    print(f"TF ops (the library): {tf_rate:7.1f} clips/s")
    try:
      import cv2
    except ImportError:
      cv2 = None
      print("OpenCV: not installed (pip install opencv-python-headless)")
    if cv2 is not None:
      cv2.setNumThreads(1)
      theirs = _opencv_swap(cv2, face_swap, src, kp, head, head_kp)
      t0 = time.perf_counter()
      for _ in range(a.clips):
        _opencv_swap(cv2, face_swap, src, kp, head, head_kp)
      cv_rate = a.clips / (time.perf_counter() - t0)
      diff = np.abs(ours.numpy().astype(int) - theirs.astype(int))
      print(
        f"OpenCV + NumPy ({cv2.__version__}): {cv_rate:7.1f} clips/s "
        f"({cv_rate / tf_rate:.2f}x the TF ops); outputs apart by "
        f"{diff.mean():.2f} grey levels on average, "
        f"{np.mean(diff > 8):.2%} of values by more than 8"
      )
  print(load.summary())


if __name__ == "__main__":
  main()
