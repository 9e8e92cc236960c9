"""The evaluation protocol's mechanics: folds, label fractions, the plateau
schedule, the linear phase, restore from pretraining, resume and reports.
(No accuracy is asserted for the tiny runs: see bench/synthetic_protocol.py.)
"""
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from configs import finetune_synthetic
from configs import stclr_synthetic
from stclr_jax import evaluate
from stclr_jax import train
from stclr_jax.evaluation import finetune
from stclr_jax.evaluation import folds as folds_lib
from stclr_jax.evaluation import report as report_lib


def test_subject_folds_are_disjoint_complete_and_balanced():
  rng = np.random.default_rng(0)
  subjects = np.repeat(np.arange(1, 81), 6)[rng.permutation(480)]
  folds = folds_lib.subject_folds(subjects, 10, seed=3)
  assert sorted(np.concatenate(folds).tolist()) == list(range(480))
  per_fold = [set(subjects[f].tolist()) for f in folds]
  assert all(len(s) == 8 for s in per_fold)
  for i in range(10):
    train_subjects = set(subjects[folds_lib.train_indices(folds[i],
                                                          480)].tolist())
    assert not per_fold[i] & train_subjects
  # Deterministic in the seed, different across seeds.
  again = folds_lib.subject_folds(subjects, 10, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(folds, again))
  other = folds_lib.subject_folds(subjects, 10, seed=4)
  assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
  # 7 subjects in 3 folds: 3/2/2 subjects.
  small = folds_lib.subject_folds(np.arange(7), 3, seed=0)
  assert sorted(len(f) for f in small) == [2, 2, 3]


def test_fold_errors_are_clear():
  with pytest.raises(ValueError, match=r"2 of 4 videos have no subject id"):
    folds_lib.subject_folds(np.array([1, -1, 2, -1]), 2, 0, what="my_data")
  with pytest.raises(ValueError, match="cannot split 3 subjects into 10"):
    folds_lib.subject_folds(np.array([1, 2, 3]), 10, 0)
  with pytest.raises(ValueError, match="fold_by"):
    folds_lib.make_folds("person", [0], [1], 2, 0)
  assert folds_lib.parse_run_folds("", 4) == [0, 1, 2, 3]
  assert folds_lib.parse_run_folds("2, 0", 4) == [0, 2]
  with pytest.raises(ValueError, match=r"folds \[4\] outside"):
    folds_lib.parse_run_folds("1,4", 4)


def test_video_folds_are_stratified():
  labels = np.repeat(np.arange(6), 20)
  folds = folds_lib.video_folds(labels, 10, seed=0)
  assert sorted(np.concatenate(folds).tolist()) == list(range(120))
  for f in folds:
    assert np.bincount(labels[f], minlength=6).tolist() == [2] * 6


@pytest.mark.parametrize("fraction", [0.75, 0.5, 0.25, 0.1])
def test_label_fraction_is_stratified_and_nested_in_train(fraction):
  labels = np.repeat(np.arange(6), [30, 31, 32, 33, 34, 35])
  train = np.arange(0, labels.size, 1)[::1]
  keep = folds_lib.label_fraction(train, labels, fraction, seed=1)
  assert len(set(keep.tolist())) == keep.size and np.all(np.diff(keep) > 0)
  counts = np.bincount(labels[keep], minlength=6)
  want = [max(1, round(fraction * n)) for n in (30, 31, 32, 33, 34, 35)]
  assert counts.tolist() == want
  assert np.array_equal(keep, folds_lib.label_fraction(train, labels,
                                                       fraction, seed=1))
  assert np.array_equal(folds_lib.label_fraction(train, labels, 1.0, 0),
                        train)
  with pytest.raises(ValueError, match="label fraction"):
    folds_lib.label_fraction(train, labels, 0.0, 0)


def test_plateau_matches_pytorch_reduce_lr_on_plateau():
  import torch  # a test requirement (Makefile)
  ev = ml_collections.ConfigDict({"plateau_factor": 0.1,
                                  "plateau_patience": 3,
                                  "plateau_rtol": 1e-4})
  plateau = finetune.Plateau(ev)
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
  # eps=0: PyTorch's default eps (1e-8) stops reducing an lr below ~1e-8.
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=3,
                                                   factor=0.1, eps=0.0)
  losses = 2 + np.cumsum(np.random.default_rng(0).normal(0, 0.05, 60))
  losses[10:16] = losses[9]  # an exact plateau too
  ours, theirs = [], []
  for loss in losses:
    ours.append(plateau.end_epoch(float(loss)))
    ref.step(float(loss))
    theirs.append(opt.param_groups[0]["lr"])
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  assert min(ours) < 1e-2  # it did reduce, more than once


def test_linear_phase_learns_separable_features():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 1, (6, 16))
  labels = rng.integers(0, 6, 300)
  feats = centres[labels] + rng.normal(0, 0.3, (300, 16))
  ev = ml_collections.ConfigDict({"plateau_factor": 0.1,
                                  "plateau_patience": 3,
                                  "plateau_rtol": 1e-4})
  params, log = finetune.train_linear(
      feats[:200], labels[:200], 6, epochs=20, batch_size=16,
      learning_rate=1e-2, ev=ev, seed=0)
  assert params["w"].shape == (16, 6) and params["b"].shape == (6,)
  assert log[-1]["loss"] < 0.5 * log[0]["loss"]
  pred = finetune.linear_predict(params, feats[200:])
  assert np.mean(pred == labels[200:]) > 0.9


def test_linear_phase_standardises_and_folds_into_one_linear_layer():
  # Pooled-ReLU-like features: a large offset and a small spread per
  # dimension (and one dead dimension), with the classes in the spread.
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 6, 400)
  centres = rng.normal(0, 1, (6, 16))
  spread = centres[labels] + rng.normal(0, 0.3, (400, 16))
  feats = (0.6 + 0.02 * spread).astype(np.float32)
  feats[:, 5] = 0.25  # constant: must not divide by zero
  ev = ml_collections.ConfigDict({"plateau_factor": 0.1,
                                  "plateau_patience": 3,
                                  "plateau_rtol": 1e-4})
  kw = dict(epochs=10, batch_size=16, learning_rate=1e-3, ev=ev, seed=0)
  std_params, std_log = finetune.train_linear(feats[:300], labels[:300], 6,
                                              standardize=True, **kw)
  _, raw_log = finetune.train_linear(feats[:300], labels[:300], 6, **kw)
  # The standardised run learns; the same run on raw features stays near
  # ln 6, which is what the standardisation is for.
  assert std_log[-1]["accuracy"] > 0.9 and std_log[-1]["loss"] < 0.5 * np.log(6)
  assert raw_log[-1]["loss"] > 0.9 * np.log(6)
  # The returned layer applies to raw features: its logits equal those of
  # the trained layer on the standardised features (same seed, same steps).
  mean, std = feats[:300].mean(0), feats[:300].std(0)
  std[5] = 1.0
  z = (feats[300:] - mean) / std
  w_std = std_params["w"] * std[:, None]
  b_std = std_params["b"] + (mean / std) @ w_std
  raw_logits = feats[300:] @ std_params["w"] + std_params["b"]
  np.testing.assert_allclose(raw_logits, z @ w_std + b_std, atol=2e-4)
  pred = finetune.linear_predict(std_params, feats[300:])
  assert np.mean(pred == labels[300:]) > 0.9


def test_report_summaries():
  cms = [np.array([[2, 0], [1, 1]]), np.array([[1, 1], [0, 2]])]
  rep = report_lib.summarize([{"fold": 0, "confusion": cms[0]},
                              {"fold": 3, "confusion": cms[1]}], ["a", "b"])
  assert rep["fold_accuracy"] == {"0": 0.75, "3": 0.75}
  assert rep["mean"] == 0.75 and rep["std"] == 0.0
  assert rep["confusion"] == [[3, 1], [1, 3]]
  assert rep["per_class_accuracy"] == {"a": 0.75, "b": 0.75}
  cm = report_lib.confusion([0, 1, 1, 2], [0, 2, 1, 2], 3)
  assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def _eval_config(**eval_fields):
  c = finetune_synthetic.get_config("tiny=1")
  c.data.data_dir = os.environ["TFDS_DATA_DIR_FOR_TESTS"]
  for k, v in eval_fields.items():
    setattr(c.eval, k, v)
  return c


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  os.environ["TFDS_DATA_DIR_FOR_TESTS"] = d
  return d


@pytest.fixture(scope="module")
def pretrained(tfds_dir, tmp_path_factory):
  """A 2-step tiny pretraining run (its workdir)."""
  c = stclr_synthetic.get_config("tiny=1")
  c.data.data_dir = tfds_dir
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:1])
  return workdir


def test_evaluate_from_pretraining_report_and_resume(pretrained, tmp_path):
  config = _eval_config(linear_epochs=2, finetune_epochs=1)
  config.init_from = pretrained
  workdir = str(tmp_path / "eval")
  rep = evaluate.evaluate(config, workdir)
  assert rep["init"] == {"init": "st-clr", "step": 2,
                         "path": os.path.join(pretrained, "checkpoints")}
  assert rep["final"] == "finetune" and rep["folds_run"] == [0, 1, 2]
  folds = [json.load(open(os.path.join(workdir, "folds",
                                       f"fold_{f:02d}.json")))
           for f in range(3)]
  # Subject-independent: 6 subjects, 2 per test part, each in one fold.
  tested = [set(f["test_subjects"]) for f in folds]
  assert [len(s) for s in tested] == [2, 2, 2]
  assert set().union(*tested) == set(range(1, 7))
  assert all(f["num_test"] == 12 and f["num_train"] == 24 for f in folds)
  for phase in ("linear", "finetune"):
    cm = np.asarray(rep[phase]["confusion"])
    assert cm.shape == (6, 6) and cm.sum() == 36
    assert np.array_equal(cm, sum(np.asarray(f[phase]["confusion"])
                                  for f in folds))
    accs = [f[phase]["accuracy"] for f in folds]
    assert rep[phase]["fold_accuracy"] == {str(i): a
                                           for i, a in enumerate(accs)}
    assert rep[phase]["mean"] == pytest.approx(np.mean(accs))
    assert rep[phase]["std"] == pytest.approx(np.std(accs))
  assert [e["epoch"] for e in folds[0]["linear"]["log"]] == [1, 2]
  assert len(folds[0]["finetune"]["log"]) == 1
  assert json.load(open(os.path.join(workdir, "report.json"))) == rep
  assert os.path.getsize(os.path.join(workdir, "confusion.png")) > 10_000
  emb = np.load(os.path.join(workdir, "embeddings.npz"))
  assert emb["features"].shape == (36, 64)  # width 0.125: 64-d features
  assert sorted(emb["subjects"].tolist()) == sorted(list(range(1, 7)) * 6)
  assert os.path.exists(os.path.join(workdir, "embeddings.png"))

  # Resume: a rerun recomputes only the missing fold, identically.
  os.remove(os.path.join(workdir, "folds", "fold_01.json"))
  before = {f: os.path.getmtime(os.path.join(workdir, "folds",
                                             f"fold_{f:02d}.json"))
            for f in (0, 2)}
  rep2 = evaluate.evaluate(config, workdir)
  for f in (0, 2):
    assert os.path.getmtime(os.path.join(
        workdir, "folds", f"fold_{f:02d}.json")) == before[f]
  again = json.load(open(os.path.join(workdir, "folds", "fold_01.json")))
  for phase in ("linear", "finetune"):
    assert again[phase]["confusion"] == folds[1][phase]["confusion"]
  assert again["finetune"]["log"][0]["loss"] == pytest.approx(
      folds[1]["finetune"]["log"][0]["loss"], rel=1e-5)
  assert rep2["finetune"] == rep["finetune"]

  # Another config in the same workdir is refused.
  config.eval.label_fraction = 0.5
  with pytest.raises(ValueError, match="another evaluation config"):
    evaluate.evaluate(config, workdir)


def test_restored_encoder_equals_the_checkpoint(pretrained):
  import orbax.checkpoint as ocp
  from flax import nnx
  from stclr_jax.evaluation import restore
  config = _eval_config()
  config.init_from = pretrained
  mesh = train.make_mesh(jax.devices()[:1])
  encoder, info = restore.initial_encoder(config, mesh)
  assert info["step"] == 2
  mngr = ocp.CheckpointManager(os.path.join(pretrained, "checkpoints"))
  saved = mngr.restore(2, args=ocp.args.StandardRestore())
  got = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
  flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
  flat_saved = dict(jax.tree_util.tree_flatten_with_path(
      restore._pure(saved["params"]["encoder"]))[0])
  assert len(flat_got) == len(flat_saved) > 50
  for path, value in flat_got:
    np.testing.assert_array_equal(value, flat_saved[path])
  stats = nnx.to_pure_dict(nnx.state(encoder, nnx.BatchStat))
  for path, value in jax.tree_util.tree_flatten_with_path(stats)[0]:
    np.testing.assert_array_equal(value, dict(
        jax.tree_util.tree_flatten_with_path(
            restore._pure(saved["batch_stats"]["encoder"]))[0])[path])
  # The random encoder differs from the pretrained one.
  config.init_from = ""
  scratch, info = restore.initial_encoder(config, mesh)
  assert info["init"] == "random"
  first = jax.tree.leaves(nnx.state(scratch, nnx.Param))[0]
  assert not np.array_equal(first, jax.tree.leaves(got)[0])


def test_bad_init_from_gets_a_clear_error(pretrained, tmp_path):
  from stclr_jax.evaluation import restore
  mesh = train.make_mesh(jax.devices()[:1])
  config = _eval_config()
  config.init_from = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope: no such directory"):
    restore.initial_encoder(config, mesh)
  (tmp_path / "empty").mkdir()
  config.init_from = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no Orbax checkpoint"):
    restore.initial_encoder(config, mesh)
  config.init_from = pretrained
  config.model.width = 0.25
  with pytest.raises(ValueError, match=r"model.width=0.125"):
    restore.initial_encoder(config, mesh)
  # Without the run's config.json, the shapes tell.
  copy = tmp_path / "copy"
  shutil.copytree(pretrained, copy)
  os.remove(copy / "config.json")
  config.init_from = str(copy)
  with pytest.raises(ValueError, match="another architecture or width"):
    restore.initial_encoder(config, mesh)
  config.model.width = 0.125
  config.model.encoder = "mc3_18"
  with pytest.raises(ValueError, match="another architecture or width"):
    restore.initial_encoder(config, mesh)
  config.model.encoder = "r2plus1d_18"
  config.init_step = 7
  with pytest.raises(ValueError, match=r"init_step=7: .* has steps \[2\]"):
    restore.initial_encoder(config, mesh)


def test_corrupt_fold_file_is_a_clear_error(tmp_path):
  path = tmp_path / "fold_03.json"
  path.write_text('{"fold": 3, "linear": ')  # a crash mid-write elsewhere
  with pytest.raises(ValueError, match=r"fold_03.json: not valid JSON"):
    evaluate._read_json(str(path))
  path.write_text('{"fold": 3}')
  assert evaluate._read_json(str(path)) == {"fold": 3}
