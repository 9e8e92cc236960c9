"""`prepare`: raw videos -> face-cropped clips + manifest, on a real face
photograph (skimage's astronaut) moved and zoomed across an h264 mp4, with
MTCNN; face-less gaps, choice of face and smoothing on exact synthetic
detections; corrupt and face-less inputs; resume; parallel workers."""
import csv
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stclr_jax.data import face_track, faces, prepare, raw_inputs
from stclr_jax.data.datasets import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACE_CENTRE, FACE_SIDE = np.array([223.0, 120.0]), 92.0  # in astronaut()
SETTINGS = dict(size=48, margin=0.2, detect_every=2)


def astronaut_frames(n=12, w=192, h=144):
  """The astronaut photo pasted so her face moves right and down and grows
  from 40 to 64 px; returns frames and the true (cx, cy, side) per frame."""
  from skimage import data
  photo = Image.fromarray(data.astronaut())
  frames, truth = [], []
  for t in range(n):
    a = t / (n - 1)
    cx, cy, side = 60 + 70 * a, 70 + 10 * a, 40 + 24 * a
    s = side / FACE_SIDE
    canvas = Image.new("RGB", (w, h), (90, 110, 130))
    canvas.paste(photo.resize((round(512 * s),) * 2, Image.BILINEAR),
                 (round(cx - FACE_CENTRE[0] * s),
                  round(cy - FACE_CENTRE[1] * s)))
    frames.append(np.asarray(canvas))
    truth.append((cx, cy, side))
  return np.stack(frames), np.array(truth)


def write_mp4(path, frames, fps=25, faststart=False):
  import av
  opts = {"movflags": "faststart"} if faststart else {}
  with av.open(str(path), "w", options=opts) as c:
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def write_folder(path, frames):
  os.makedirs(path, exist_ok=True)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(os.path.join(path, f"{i:03d}.png"))


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, worker_id):
  """The command line run once (MTCNN, detect every 2nd frame) on: a moving
  face as mp4 and as a frame folder, pure noise, two truncated mp4s (index
  last, index first), a note.
  Under pytest-xdist the workers share one run (the tests only read it)."""
  frames, truth = astronaut_frames()
  if worker_id == "master":
    return _run_command(tmp_path_factory.mktemp("prep"), frames, truth)
  shared = tmp_path_factory.getbasetemp().parent / "prepare_test_shared"
  os.makedirs(shared, exist_ok=True)
  with open(shared / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (shared / "result.json").exists():
      run = _run_command(shared, frames, truth)[2]
      (shared / "result.json").write_text(json.dumps(
          [run.returncode, run.stdout, run.stderr]))
  rc, stdout, stderr = json.loads((shared / "result.json").read_text())
  return (shared / "raw", shared / "out",
          subprocess.CompletedProcess([], rc, stdout, stderr), frames, truth)


def _run_command(tmp, frames, truth):
  raw = tmp / "raw"
  os.makedirs(raw / "happy" / "S1")
  write_mp4(raw / "happy" / "S1" / "astro.mp4", frames)
  write_folder(raw / "sad" / "S3" / "take1", frames[::-1])
  rng = np.random.default_rng(0)
  os.makedirs(raw / "surprise")
  write_mp4(raw / "surprise" / "noise.mp4",
            rng.integers(0, 256, (8, 96, 96, 3), np.uint8))
  data = (raw / "happy" / "S1" / "astro.mp4").read_bytes()
  (raw / "surprise" / "broken.mp4").write_bytes(data[:len(data) // 2])
  write_mp4(tmp / "fast.mp4", frames, faststart=True)   # index first
  data = (tmp / "fast.mp4").read_bytes()
  (raw / "surprise" / "cut.mp4").write_bytes(data[:len(data) * 4 // 5])
  (raw / "labels_notes.txt").write_text("not a video\n")
  out = tmp / "out"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  run = subprocess.run(
      [sys.executable, "-m", "stclr_jax.data.prepare", f"--input={raw}",
       f"--output={out}", "--size=48", "--margin=0.2", "--detect_every=2",
       "--noprogress"], capture_output=True, text=True, cwd=ROOT, env=env,
      timeout=300)
  return raw, out, run, frames, truth


def test_command_writes_manifest_and_skips_with_reasons(prepared):
  raw, out, run, _, _ = prepared
  assert run.returncode == 0, run.stderr[-3000:]
  assert read_csv(out / "manifest.csv") == [
      ["path", "label", "subject", "frames_in", "frames_kept", "fps"],
      ["clips/happy/S1/astro", "happy", "S1", "12", "12", "25"],
      ["clips/sad/S3/take1", "sad", "S3", "12", "12", ""]]
  assert read_csv(out / "videos.csv")[1:] == [
      ["clips/happy/S1/astro", "happy", "S1", ""],
      ["clips/sad/S3/take1", "sad", "S3", ""]]
  skipped = {os.path.basename(p): (k, r)
             for p, k, r in read_csv(out / "skipped.csv")[1:]}
  assert set(skipped) == {"noise.mp4", "broken.mp4", "cut.mp4"}
  assert skipped["noise.mp4"][0] == "no_face"
  assert "no face found" in skipped["noise.mp4"][1]
  for name in ("broken.mp4", "cut.mp4"):
    kind, reason = skipped[name]
    assert kind == "corrupt" and f"{name}: cannot decode video" in reason
    assert "Invalid data" in reason           # the decoder's own message
  assert "prepared 2 (0 reused" in run.stdout
  assert "skipped 3: corrupt 2, no_face 1" in run.stdout
  assert "ignored 1 files" in run.stdout and "labels_notes.txt" in run.stdout
  assert not os.path.exists(out / "clips" / "surprise")


def test_crop_follows_the_moving_face(prepared):
  raw, out, _, frames, truth = prepared
  import json
  for rec_path, order in (("happy/S1/astro", slice(None)),
                          ("sad/S3/take1", slice(None, None, -1))):
    with open(out / ".prepare" / (rec_path + ".json")) as f:
      rec = json.load(f)
    true = truth[order]
    boxes = np.array(rec["boxes"])
    assert rec["states"].count("D") >= 6 and "C" not in rec["states"]
    err = np.hypot(*(boxes[:, :2] - true[:, :2]).T) / true[:, 2]
    assert err.max() < 0.12, err                # centre within 12% of side
    ratio = boxes[:, 2] / true[:, 2]
    assert 0.8 < ratio.min() and ratio.max() < 1.4, ratio
    assert np.ptp(ratio) < 0.15                 # the zoom is followed
    # The written frames are the crops of those boxes (with the margin), not
    # of boxes a quarter face away.
    clip = np.stack([np.asarray(Image.open(p)) for p in
                     video_io.list_frames(out / "clips" / rec_path)])
    assert clip.shape == (12, 48, 48, 3)
    src = frames[order]
    for t in (0, 11):
      def corr(box):
        want = raw_inputs.crop(src[t], box, 0.2, 48)
        return np.corrcoef(clip[t].ravel(), want.ravel())[0, 1]
      side = boxes[t, 2]
      assert corr(boxes[t]) > 0.98
      assert corr(boxes[t] + [side / 4, 0, 0]) < 0.8
      assert corr(boxes[t] * [1, 1, 1.25]) < 0.8


def test_output_feeds_video_folder_and_preview(prepared, tmp_path):
  import tensorflow_datasets as tfds
  from stclr_jax.data import preview
  from stclr_jax.data.datasets import video_folder
  _, out, _, _, _ = prepared
  # The manifest itself is a video_folder CSV (header; extra columns).
  cfg = video_folder.config_for_csv(str(out / "manifest.csv"))
  b = tfds.builder("video_folder", config=cfg, data_dir=str(tmp_path))
  b.download_and_prepare()
  assert b.info.features["label"].names == ["happy", "sad"]
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  assert sorted(r["video"].shape for r in rows) == [(12, 48, 48, 3)] * 2
  assert b.info.metadata["skipped"] == []

  spec = importlib.util.spec_from_file_location(
      "cfg", os.path.join(ROOT, "configs", "stclr_synthetic.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.data.name, c.data.csv_path = "video_folder", str(out / "manifest.csv")
  c.data.data_dir, c.data.clip_len, c.data.size = str(tmp_path), 4, 32
  png = preview.write_preview(c, str(tmp_path / "p.png"), num_videos=2)
  img = np.asarray(Image.open(png))
  assert img.shape == (2 * 32 + 4, 2 * 4 * 32 + 12, 3)
  assert img[:32, :32].std() > 10                 # a picture, not blank


class FixedDetector(faces.FaceDetector):
  """Finds one face at a fixed box and counts the frames it looked at."""

  name = "fixed"
  frames_seen = 0

  def detect_one(self, frame_HxWx3):
    FixedDetector.frames_seen += 1
    return np.array([[60, 50, 100, 90, 1.0]], np.float32)


def _exploding(min_face):
  raise AssertionError("a complete output was prepared again")


def test_rerun_resumes(prepared, tmp_path):
  raw, out0, _, _, _ = prepared
  out = tmp_path / "out"
  shutil.copytree(out0, out)
  settings = prepare.Settings(**SETTINGS)
  s = prepare.prepare(str(raw), str(out), settings, progress=False,
                      detector_factory=_exploding)
  assert s.reused == 5 and len(s.prepared) == 2
  assert read_csv(out / "manifest.csv") == read_csv(out0 / "manifest.csv")
  # An interrupted write: a clip with missing frames and a stale partial
  # folder. Only that video is prepared again.
  clip = out / "clips" / "happy" / "S1" / "astro"
  os.remove(clip / "000011.jpg")
  os.makedirs(str(clip) + ".partial")
  FixedDetector.frames_seen = 0
  s = prepare.prepare(str(raw), str(out), settings, progress=False,
                      detector_factory=lambda m: FixedDetector(m))
  assert s.reused == 4 and FixedDetector.frames_seen == 7   # 12 frames, k=2
  assert len(os.listdir(clip)) == 12 and not os.path.exists(
      str(clip) + ".partial")
  # Changed settings redo the work.
  s = prepare.prepare(str(raw), str(out), prepare.Settings(
      **dict(SETTINGS, size=32)), progress=False,
                      detector_factory=lambda m: FixedDetector(m))
  assert s.reused == 0
  assert np.asarray(Image.open(clip / "000000.jpg")).shape == (32, 32, 3)


# -- tracking on exact detections --------------------------------------------

def _detections(present, box=(40, 30, 80, 70), speed=1.0):
  def detect(idx):
    detect.examined += list(idx)
    return [np.array([[box[0] + speed * t, box[1], box[2] + speed * t,
                       box[3], 0.9]]) if present(t) else np.zeros((0, 5))
            for t in idx]
  detect.examined = []
  return detect


def test_gaps_are_bridged_or_cut_and_counted():
  present = lambda t: not (10 <= t <= 12 or 20 <= t <= 29)  # noqa: E731
  want = "D" * 10 + "B" * 3 + "D" * 7 + "C" * 10 + "D" * 10
  for k in (1, 3):
    det = _detections(present)
    tr = face_track.follow(40, det, face_track.TrackParams(
        detect_every=k, max_gap=4, smooth=0))
    assert tr.states.replace("I", "D") == want, (k, tr.states)
    assert (tr.gaps_bridged, tr.frames_bridged) == (1, 3)
    assert (tr.segments_cut, tr.frames_cut) == (1, 10)
    assert tr.kept.sum() == 30
    assert np.isnan(tr.boxes_Tx3[20:30]).all()
    # Bridged boxes continue the motion (the face moves 1 px a frame).
    np.testing.assert_allclose(tr.boxes_Tx3[10:13, 0], [70, 71, 72])
    if k == 3:   # every frame near a miss examined, not the rest
      grid = set(range(0, 40, 3)) | {39}
      assert set(det.examined) == grid | {10, 11, 13, 14} | set(range(19, 30))
      assert tr.states[16:18] == "II" and tr.frames_examined == 26
  # Edges: a short face-less start is bridged (held), a long end is cut.
  tr = face_track.follow(30, _detections(lambda t: 3 <= t < 15),
                         face_track.TrackParams(max_gap=4, smooth=0))
  assert tr.states == "B" * 3 + "D" * 12 + "C" * 15
  np.testing.assert_allclose(tr.boxes_Tx3[:3, 0], 63)
  tr = face_track.follow(8, _detections(lambda t: False))
  assert tr.faces_seen == 0 and tr.states == "C" * 8


def test_choose_largest_or_most_persistent_face():
  big = [50, 40, 150, 140, 0.9]          # 100 px, in frames 0-9 only
  small = [300, 50, 340, 90, 0.99]       # 40 px, in all 20 frames

  def detect(idx):
    return [np.array([big, small] if t < 10 else [small]) for t in idx]
  params = dict(max_gap=2, smooth=0)
  tr = face_track.follow(20, detect, face_track.TrackParams(
      choose="largest", **params))
  assert tr.faces_seen == 2 and tr.states == "D" * 10 + "C" * 10
  assert tr.boxes_Tx3[0, 2] == 100
  tr = face_track.follow(20, detect, face_track.TrackParams(
      choose="persistent", **params))
  assert tr.states == "D" * 20 and tr.boxes_Tx3[0, 2] == 40
  tr = face_track.follow(20, detect, face_track.TrackParams(
      choose="auto", **params))             # 10 x 100 > 20 x 40
  assert tr.boxes_Tx3[0, 2] == 100


def test_smoothing_removes_jitter_and_keeps_motion():
  t = np.arange(30, dtype=np.float64)
  line = np.stack([10 + 2 * t, 50 - t, 40 + 0.5 * t], -1)
  np.testing.assert_allclose(face_track.smooth_boxes(line, 2.0), line,
                             atol=1e-9)
  jitter = np.random.default_rng(0).normal(0, 2, line.shape)
  smooth = face_track.smooth_boxes(line + jitter, 2.0)
  assert np.abs(smooth - line).std() < 0.5 * jitter.std()


# -- a plug-in detector, frame folders, CSV input, parallel workers ----------

class RedDetector(faces.FaceDetector):
  """The bounding box of pure-red pixels (a stand-in face)."""

  name = "red"

  def detect_one(self, frame_HxWx3):
    f = frame_HxWx3.astype(int)
    ys, xs = np.nonzero((f[..., 0] > 200) & (f[..., 1] < 60) & (f[..., 2] < 60))
    if not len(xs):
      return np.zeros((0, 5), np.float32)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1]],
                    np.float32)


def _red_square_frames(n, missing=(), w=80, h=60):
  frames = np.full((n, h, w, 3), 40, np.uint8)
  for t in range(n):
    if t not in missing:
      frames[t, 10:30, 10 + t:30 + t] = (255, 0, 0)
  return frames


def test_csv_input_parallel_workers_and_gaps(tmp_path):
  raw = tmp_path / "raw"
  write_folder(raw / "a", _red_square_frames(20, missing=(4, 5)))
  write_folder(raw / "b", _red_square_frames(20, missing=range(8, 16)))
  (raw / "list.csv").write_text("path,label,subject,group\n"
                                "a,pos,S1,train\nb,neg,S2,test\n")
  settings = prepare.Settings(detector="red", size=16, max_gap=3,
                              min_face=12, folder_fps=30)
  s = prepare.prepare(str(raw / "list.csv"), str(tmp_path / "out"), settings,
                      workers=2, detector_factory=RedDetector,
                      progress=False)
  assert [r["frames_kept"] for r in s.records] == [20, 12]
  assert [(r["gaps_bridged"], r["segments_cut"]) for r in s.records] == [
      (1, 0), (0, 1)]
  assert read_csv(tmp_path / "out" / "manifest.csv")[1:] == [
      ["clips/a", "pos", "S1", "20", "20", "30"],
      ["clips/b", "neg", "S2", "20", "12", "30"]]
  assert read_csv(tmp_path / "out" / "videos.csv")[2] == [
      "clips/b", "neg", "S2", "test"]
  assert "1 face-less gaps bridged (2 frames); 1 face-less segments cut " \
         "(8 frames)" in s.text()
  # The red square is centred in every crop, bridged frames included.
  for name in ("a", "b"):
    clip = [np.asarray(Image.open(p)).astype(int) for p in
            video_io.list_frames(tmp_path / "out" / "clips" / name)]
    red = [(f[..., 0] > 150) & (f[..., 1] < 90) for f in clip]
    for i, m in enumerate(red):
      if name == "a" and i in (4, 5):
        assert not m.any()              # bridged frame, no face in it
        continue
      ys, xs = np.nonzero(m)
      assert abs(xs.mean() - 7.5) < 1 and abs(ys.mean() - 7.5) < 1, (name, i)


def test_bad_inputs_name_the_file(tmp_path):
  with pytest.raises(video_io.BadInputError, match="nope: --input must be"):
    prepare.prepare(str(tmp_path / "nope"), str(tmp_path / "o"))
  (tmp_path / "top.mp4").write_bytes(b"x")
  with pytest.raises(video_io.BadInputError,
                     match=r"top.mp4: at the top of --input"):
    raw_inputs.find_inputs(str(tmp_path))
  os.remove(tmp_path / "top.mp4")
  with pytest.raises(video_io.BadInputError, match="no videos"):
    raw_inputs.find_inputs(str(tmp_path))
  with pytest.raises(video_io.BadInputError, match="must not be inside"):
    prepare.prepare(str(tmp_path), str(tmp_path / "out"))
  (tmp_path / "l.csv").write_text("a.mp4,x\nb.mp4\n")
  with pytest.raises(video_io.BadInputError, match=r"l.csv:2: expected"):
    raw_inputs.find_inputs(str(tmp_path / "l.csv"))
  (tmp_path / "l.csv").write_text("a.mp4,x\n./a.mp4,y\n")
  with pytest.raises(video_io.BadInputError, match="a.mp4: listed twice"):
    raw_inputs.find_inputs(str(tmp_path / "l.csv"))
  (tmp_path / "l.csv").write_text("a.mp4,x\na.avi,y\n")
  ids = [it.id for it in raw_inputs.find_inputs(str(tmp_path / "l.csv"))[0]]
  assert ids == ["a_mp4", "a_avi"]
  with pytest.raises(ValueError, match="unknown face detector 'yolo'"):
    faces.make_detector("yolo")
  with pytest.raises(ValueError, match="max_gap must be >= 0"):
    prepare.Settings(max_gap=-1)
