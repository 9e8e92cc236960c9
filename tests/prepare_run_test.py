"""The ``prepare`` run: crops that follow the face, resuming from the
records of an earlier run, a plug-in detector on frame folders listed in a
CSV with parallel workers, unlabelled videos to a data set without labels,
and the arguments it refuses."""

import json
import os
import shutil

import numpy as np
import pytest
from _helpers_prepare import (
  SETTINGS,
  DimRedDetector,
  FixedDetector,
  RedDetector,
  red_square_frames,
)
from _helpers_video import build, read_csv, write_folder, write_mp4
from PIL import Image

from stclr_jax import video_io
from stclr_jax.data.datasets import video_folder
from stclr_jax.prepare import clip as clip_lib
from stclr_jax.prepare import run
from stclr_jax.prepare.settings import Settings


def test_crop_follows_the_moving_face(prepared):
  raw, out, _, frames, truth = prepared
  for rec_path, order in (
    ("happy/S1/astro", slice(None)),
    ("sad/S3/take1", slice(None, None, -1)),
  ):
    with open(out / ".prepare" / (rec_path + ".json")) as f:
      rec = json.load(f)
    true = truth[order]
    boxes = np.array(rec["boxes"])
    assert rec["states"].count("D") >= 6 and "C" not in rec["states"]
    err = np.hypot(*(boxes[:, :2] - true[:, :2]).T) / true[:, 2]
    assert err.max() < 0.12, err  # centre within 12% of side
    ratio = boxes[:, 2] / true[:, 2]
    assert 0.8 < ratio.min() and ratio.max() < 1.4, ratio
    assert np.ptp(ratio) < 0.15  # the zoom is followed
    # The written frames are the crops of those boxes (with the margin), not
    # of boxes a quarter face away.
    clip = np.stack(
      [
        np.asarray(Image.open(p))
        for p in video_io.list_frames(out / "clips" / rec_path)
      ]
    )
    assert clip.shape == (12, 48, 48, 3)
    src = frames[order]
    for t in (0, 11):

      def corr(box, t=t, src=src, clip=clip):
        want = clip_lib.crop(src[t], box, 0.2, 48)
        return np.corrcoef(clip[t].ravel(), want.ravel())[0, 1]

      side = boxes[t, 2]
      assert corr(boxes[t]) > 0.98
      assert corr(boxes[t] + [side / 4, 0, 0]) < 0.8
      assert corr(boxes[t] * [1, 1, 1.25]) < 0.8


def _exploding(min_face):
  raise AssertionError("a complete output was prepared again")


def test_rerun_resumes(prepared, tmp_path):
  raw, out0, _, _, _ = prepared
  out = tmp_path / "out"
  shutil.copytree(out0, out)
  settings = Settings(**SETTINGS)
  s = run.prepare(
    str(raw), str(out), settings, progress=False, detector_factory=_exploding
  )
  assert s.reused == 5 and len(s.prepared) == 2
  assert read_csv(out / "manifest.csv") == read_csv(out0 / "manifest.csv")
  # An interrupted write: a clip with missing frames and a stale partial
  # folder. Only that video is prepared again.
  clip = out / "clips" / "happy" / "S1" / "astro"
  os.remove(clip / "000011.jpg")
  os.makedirs(str(clip) + ".partial")
  FixedDetector.frames_seen = 0
  s = run.prepare(
    str(raw),
    str(out),
    settings,
    progress=False,
    detector_factory=lambda m: FixedDetector(m),
  )
  assert s.reused == 4 and FixedDetector.frames_seen == 7  # 12 frames, k=2
  assert len(os.listdir(clip)) == 12 and not os.path.exists(
    str(clip) + ".partial"
  )
  # Changed settings redo the work.
  s = run.prepare(
    str(raw),
    str(out),
    Settings(**dict(SETTINGS, size=32)),
    progress=False,
    detector_factory=lambda m: FixedDetector(m),
  )
  assert s.reused == 0
  assert np.asarray(Image.open(clip / "000000.jpg")).shape == (32, 32, 3)


def test_csv_input_parallel_workers_and_gaps(tmp_path):
  raw = tmp_path / "raw"
  write_folder(raw / "a", red_square_frames(20, missing=(4, 5)))
  write_folder(raw / "b", red_square_frames(20, missing=range(8, 16)))
  (raw / "list.csv").write_text(
    "path,label,subject,group\na,pos,S1,train\nb,neg,S2,test\n"
  )
  settings = Settings(
    detector="red", size=16, max_gap=3, min_face=12, folder_fps=30
  )
  s = run.prepare(
    str(raw / "list.csv"),
    str(tmp_path / "out"),
    settings,
    workers=2,
    detector_factory=RedDetector,
    progress=False,
  )
  assert [r["frames_kept"] for r in s.records] == [20, 12]
  assert [(r["gaps_bridged"], r["segments_cut"]) for r in s.records] == [
    (1, 0),
    (0, 1),
  ]
  assert read_csv(tmp_path / "out" / "manifest.csv")[1:] == [
    ["clips/a", "pos", "S1", "20", "20", "30"],
    ["clips/b", "neg", "S2", "20", "12", "30"],
  ]
  assert read_csv(tmp_path / "out" / "videos.csv")[2] == [
    "clips/b",
    "neg",
    "S2",
    "test",
  ]
  assert (
    "1 face-less gaps bridged (2 frames); 1 face-less segments cut "
    "(8 frames)" in s.text()
  )
  # The red square is centred in every crop, bridged frames included.
  for name in ("a", "b"):
    clip = [
      np.asarray(Image.open(p)).astype(int)
      for p in video_io.list_frames(tmp_path / "out" / "clips" / name)
    ]
    red = [(f[..., 0] > 150) & (f[..., 1] < 90) for f in clip]
    for i, m in enumerate(red):
      if name == "a" and i in (4, 5):
        assert not m.any()  # bridged frame, no face in it
        continue
      ys, xs = np.nonzero(m)
      assert abs(xs.mean() - 7.5) < 1 and abs(ys.mean() - 7.5) < 1, (name, i)


def test_unlabelled_folder_makes_a_data_set_without_labels(tmp_path):
  raw = tmp_path / "raw"
  os.makedirs(raw)
  write_mp4(raw / "clip.mp4", red_square_frames(6), codec="mpeg4")
  write_folder(raw / "take1", red_square_frames(5))
  settings = Settings(detector="red", size=16, min_face=12)
  out = tmp_path / "out"
  s = run.prepare(
    str(raw), str(out), settings, detector_factory=RedDetector, progress=False
  )
  assert "no labels: an unlabelled data set, for pretraining" in s.text()
  assert read_csv(out / "manifest.csv")[1:] == [
    ["clips/clip", "", "", "6", "6", "25"],
    ["clips/take1", "", "", "5", "5", ""],
  ]
  assert read_csv(out / "videos.csv")[1:] == [
    ["clips/clip", "", "", ""],
    ["clips/take1", "", "", ""],
  ]
  cfg = video_folder.config_for_csv(str(out / "manifest.csv"))
  b = build("video_folder", tmp_path / "tfds", config=cfg)
  assert "label" not in b.info.features and b.info.supervised_keys is None
  rows = list(b.as_dataset(split="train").as_numpy_iterator())
  assert sorted((r["video_id"], r["video"].shape) for r in rows) == [
    (b"clips/clip", (6, 16, 16, 3)),
    (b"clips/take1", (5, 16, 16, 3)),
  ]
  # With labelled videos too, the run is refused before it writes anything.
  write_folder(raw / "happy" / "take2", red_square_frames(5))
  with pytest.raises(
    video_io.BadInputError,
    match=r"clip.mp4 is at the top of --input \(no label\), "
    r".*happy/take2 is in the label folder 'happy'",
  ):
    run.prepare(str(raw), str(tmp_path / "out2"), settings, progress=False)
  assert not os.path.exists(tmp_path / "out2")


def test_bad_run_arguments_name_the_problem(tmp_path):
  with pytest.raises(video_io.BadInputError, match="nope: --input must be"):
    run.prepare(str(tmp_path / "nope"), str(tmp_path / "o"))
  with pytest.raises(video_io.BadInputError, match="must not be inside"):
    run.prepare(str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="max_gap must be >= 0"):
    Settings(max_gap=-1)


def test_mtcnn_keypoints_are_kept_in_clip_coordinates(prepared, tmp_path):
  """MaskFN's keypoints: MTCNN's five per kept frame, in the clip's
  pixels. The face moves and grows, the crop follows it, so in the clip
  they hold still (within 1 px of 48) and sit where a face has them; the
  data set built from the manifest carries them."""
  _, out, _, _, _ = prepared
  for rec_path in ("happy/S1/astro", "sad/S3/take1"):
    kp = np.load(out / "clips" / rec_path / clip_lib.KEYPOINTS_FILE)
    assert kp.shape == (12, 5, 2) and kp.dtype == np.float32
    assert np.isfinite(kp).all()
    assert kp.std(axis=0).max() < 1.0
    eyes, nose, mouth = kp[:, :2], kp[:, 2], kp[:, 3:]
    assert (eyes[:, 0, 0] < eyes[:, 1, 0]).all()  # left eye on the left
    assert (eyes[..., 1].max(1) < nose[:, 1]).all()
    assert (nose[:, 1] < mouth[..., 1].min(1)).all()
    iod = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=-1)
    assert ((iod > 0.2 * 48) & (iod < 0.45 * 48)).all(), iod
    with open(out / ".prepare" / (rec_path + ".json")) as f:
      assert json.load(f)["keypoints_missing"] == 0
  cfg = video_folder.config_for_csv(str(out / "manifest.csv"))
  b = build("video_folder", tmp_path / "tfds", config=cfg)
  rows = {
    r["video_id"].decode(): r
    for r in b.as_dataset(split="train").as_numpy_iterator()
  }
  np.testing.assert_array_equal(
    rows["clips/happy/S1/astro"]["keypoints"],
    np.load(out / "clips/happy/S1/astro" / clip_lib.KEYPOINTS_FILE),
  )


def test_crop_keypoints_maps_the_box_to_the_clip():
  """A box (cx, cy, side) = (50, 40, 20) with margin 0.1 spans 24 px from
  (38, 28): the clip's [0, 48] square, 2 clip pixels per frame pixel."""
  boxes = np.array([[50.0, 40.0, 20.0]])
  kp = np.array([[[38.0, 28], [50, 40], [62, 52], [0, 0], [np.nan, 1]]])
  got = clip_lib.crop_keypoints(kp, boxes, 0.1, 48)
  np.testing.assert_allclose(
    got[0, :4], [[0, 0], [24, 24], [48, 48], [-76, -56]]
  )
  assert np.isnan(got[0, 4, 0]) and got.dtype == np.float32


def test_a_no_face_skip_names_the_rule_that_rejected_the_detections(
  tmp_path,
):
  """A clip is only made of a track with evidence: a face found with a low
  confidence, or in a sparse run (every 4th frame: 5 detections over 17
  frames), is skipped as ``no_face`` with the rule in its reason; a video
  where nothing was found says so. The same videos were prepared before the
  rules (``Settings.no_evidence_rules``)."""
  raw = tmp_path / "raw"
  write_folder(raw / "solid", red_square_frames(20))
  write_folder(
    raw / "sparse",
    red_square_frames(20, missing=[t for t in range(20) if t % 4]),
  )
  write_folder(raw / "empty", red_square_frames(20, missing=range(20)))
  base = dict(detector="red", size=16, min_face=12, folder_fps=25)

  def reasons(settings, factory, out):
    s = run.prepare(
      str(raw), str(tmp_path / out), settings, detector_factory=factory,
      progress=False,
    )  # fmt: skip
    return {r["id"]: (r["status"], r.get("reason", "")) for r in s.records}

  got = reasons(Settings(**base), RedDetector, "rules")
  assert got["solid"][0] == "prepared"
  assert got["sparse"][0] == "skipped"
  assert "face tracks too short or too sparse" in got["sparse"][1]
  assert "5 detections over 0.68 s in 29% of its frames" in got["sparse"][1]
  assert "min_track_density=0.5" in got["sparse"][1]
  assert got["empty"] == ("skipped", got["empty"][1])
  assert got["empty"][1].startswith("no face found (20 frames examined")
  dim = reasons(Settings(**base), DimRedDetector, "dim")
  assert dim["solid"][0] == "skipped"
  assert "20 frames' detections below min_confidence=0.95" in dim["solid"][1]
  before = reasons(Settings.no_evidence_rules(**base), DimRedDetector, "before")
  assert before["solid"][0] == before["sparse"][0] == "prepared"
