"""The evaluation protocol's driver (stclr_jax/evaluation/protocol.py): from a
pretraining run to the report, resume, and clear errors. (No accuracy is
asserted for the tiny runs: see bench/synthetic_protocol.py.)"""

import json
import os

import jax
import numpy as np
import pytest

from configs import finetune_synthetic, stclr_synthetic
from stclr_jax import train
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import protocol, transformer_recipe


def _eval_config(**eval_fields):
  c = finetune_synthetic.get_config("tiny=1")
  c.data.data_dir = os.environ["TFDS_DATA_DIR_FOR_TESTS"]
  for k, v in eval_fields.items():
    setattr(c.eval, k, v)
  return c


# autouse: every test here builds its config with _eval_config, which reads
# this directory (under pytest-xdist a test may be a worker's first).
@pytest.fixture(scope="module", autouse=True)
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
  train.pretrain(c, workdir, devices=jax.devices()[:1])
  return workdir


def test_evaluate_from_pretraining_report_and_resume(pretrained, tmp_path):
  config = _eval_config(linear_epochs=2, finetune_epochs=1)
  config.init_from = pretrained
  workdir = str(tmp_path / "eval")
  rep = protocol.evaluate(config, workdir)
  assert rep["init"] == {
    "init": "st-clr",
    "step": 2,
    "path": os.path.join(pretrained, "checkpoints"),
    "bn_reestimated": False,  # a pretrained encoder keeps its statistics
  }
  assert rep["final"] == "finetune" and rep["folds_run"] == [0, 1, 2]
  folds = [
    json.load(open(os.path.join(workdir, "folds", f"fold_{f:02d}.json")))
    for f in range(3)
  ]
  # Subject-independent: 6 subjects, 2 per test part, each in one fold.
  tested = [set(f["test_subjects"]) for f in folds]
  assert [len(s) for s in tested] == [2, 2, 2]
  assert set().union(*tested) == set(range(1, 7))
  assert all(f["num_test"] == 12 and f["num_train"] == 24 for f in folds)
  for phase in ("linear", "finetune"):
    cm = np.asarray(rep[phase]["confusion"])
    assert cm.shape == (6, 6) and cm.sum() == 36
    assert np.array_equal(
      cm, sum(np.asarray(f[phase]["confusion"]) for f in folds)
    )
    accs = [f[phase]["accuracy"] for f in folds]
    assert rep[phase]["fold_accuracy"] == {
      str(i): a for i, a in enumerate(accs)
    }
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
  before = {
    f: os.path.getmtime(os.path.join(workdir, "folds", f"fold_{f:02d}.json"))
    for f in (0, 2)
  }
  rep2 = protocol.evaluate(config, workdir)
  for f in (0, 2):
    assert (
      os.path.getmtime(os.path.join(workdir, "folds", f"fold_{f:02d}.json"))
      == before[f]
    )
  again = json.load(open(os.path.join(workdir, "folds", "fold_01.json")))
  for phase in ("linear", "finetune"):
    assert again[phase]["confusion"] == folds[1][phase]["confusion"]
  assert again["finetune"]["log"][0]["loss"] == pytest.approx(
    folds[1]["finetune"]["log"][0]["loss"], rel=1e-5
  )
  assert rep2["finetune"] == rep["finetune"]

  # Another config in the same workdir is refused.
  config.eval.label_fraction = 0.5
  with pytest.raises(ValueError, match="another evaluation config"):
    protocol.evaluate(config, workdir)


def test_corrupt_fold_file_is_a_clear_error(tmp_path):
  path = tmp_path / "fold_03.json"
  path.write_text('{"fold": 3, "linear": ')  # a crash mid-write elsewhere
  with pytest.raises(ValueError, match=r"fold_03.json: not valid JSON"):
    protocol.read_json(str(path))
  path.write_text('{"fold": 3}')
  assert protocol.read_json(str(path)) == {"fold": 3}


def test_unlabelled_data_is_a_clear_error(tfds_dir, tmp_path):
  config = _eval_config()
  config.data.name = "synthetic_expressions/tiny_pool"
  with pytest.raises(ValueError, match="tiny_pool has no labels"):
    protocol.evaluate(config, str(tmp_path / "eval"))


def test_bn_reestimate_modes():
  config = _eval_config()
  assert config.eval.bn_reestimate == "auto"
  assert protocol.reestimate_batch_stats(config)  # random encoder
  config.init_from = "some/pretraining/run"
  assert not protocol.reestimate_batch_stats(config)
  config.eval.bn_reestimate = "on"
  assert protocol.reestimate_batch_stats(config)
  config.eval.bn_reestimate = "yes"
  with pytest.raises(ValueError, match="eval.bn_reestimate must be"):
    protocol.reestimate_batch_stats(config)


def test_scratch_reestimates_and_the_learning_curve_changes_nothing(
  tfds_dir, tmp_path
):
  config = _eval_config(
    linear_epochs=1,
    finetune_epochs=2,
    run_folds="0",
    schedule="cosine",
    label_fraction=0.5,  # features of the used videos only
  )
  plain = protocol.evaluate(config, str(tmp_path / "plain"))
  config.eval.log_test_every = 1
  curve = protocol.evaluate(config, str(tmp_path / "curve"))
  assert plain["init"] == {"init": "random", "seed": 0, "bn_reestimated": True}
  for phase in ("linear", "finetune"):
    assert curve[phase]["confusion"] == plain[phase]["confusion"]
  log = json.load(open(tmp_path / "curve" / "folds" / "fold_00.json"))
  log = log["finetune"]["log"]
  assert [e["epoch"] for e in log] == [1, 2]
  assert all(0 <= e["test_accuracy"] <= 1 for e in log)
  assert log[-1]["test_accuracy"] == curve["finetune"]["mean"]
  lr = config.eval.learning_rate
  assert [e["lr"] for e in log] == [lr, lr * 0.5 * (1 + np.cos(np.pi / 2))]
  ident = curve["identity_probe"]
  assert ident["subjects"] == 6 and 0 <= ident["accuracy"] <= 1


def test_a_video_transformer_fine_tunes_with_its_recipe(tmp_path):
  """A random ViT through the whole protocol (one fold, 3 steps): its
  fine-tuning log follows the recipe's schedule, not the ResNet path's
  plateau, and its test clips are two windows."""
  config = _eval_config(
    budget="steps", linear_steps=2, finetune_steps=3, run_folds="0"
  )
  config.model.encoder = "vit_tiny"
  config.eval.transformer.warmup_fraction = 0.34  # one warm-up step of 3
  rep = protocol.evaluate(config, str(tmp_path / "eval"))
  assert rep["final"] == "finetune" and rep["folds_run"] == [0]
  fold = json.load(open(tmp_path / "eval" / "folds" / "fold_00.json"))
  want = transformer_recipe.lr_table(
    config.eval.transformer,
    transformer_recipe.learning_rate(config.eval.transformer, 8),
    3,
  )
  logged = [e["lr"] for e in fold["finetune"]["log"]]
  assert logged[-1] == pytest.approx(want[-1], rel=1e-6)
  assert want[0] == pytest.approx(config.eval.transformer.warmup_lr)
  assert eval_input.test_windows(config) == 2
  config.model.encoder = "r2plus1d_18"
  assert eval_input.test_windows(config) == 1


def test_fingerprint_ignores_the_transformer_recipe_only_for_resnets():
  """A ResNet fold cannot depend on ``eval.transformer``, so its stored runs
  stay valid when that recipe changes; a transformer's fingerprint does
  change with it, and every other field still counts for a ResNet."""
  config = finetune_synthetic.get_config("tiny=1")
  base = protocol.fingerprint(config)
  config.eval.transformer.layer_decay = 0.5
  assert protocol.fingerprint(config) == base
  config.eval.transformer.test_windows = 3
  assert protocol.fingerprint(config) == base
  config.eval.learning_rate = config.eval.learning_rate * 2
  assert protocol.fingerprint(config) != base

  vit = finetune_synthetic.get_config("tiny=1")
  vit.model.encoder = "vit_tiny"
  vit_base = protocol.fingerprint(vit)
  vit.eval.transformer.layer_decay = 0.5
  assert protocol.fingerprint(vit) != vit_base
