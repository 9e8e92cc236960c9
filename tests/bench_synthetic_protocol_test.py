"""The calibrated benchmark's mechanics (bench/synthetic_protocol.py) on
the tiny data: equal step budgets at every label fraction, runs paired by
name, held-out logits, the supervised controls, and the machine-readable
results. (Accuracies belong in BENCHMARKS.md, not here.)"""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import synthetic_protocol  # noqa: E402

from stclr_jax.evaluation import supervised_pretrain  # noqa: E402

ARMS = "scratch,supervised_pool,identity_pool,shuffled_pool,pixels"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
  d = tmp_path_factory.mktemp("bench")
  out = d / "results.json"
  result = synthetic_protocol.main(
    [
      "--tiny",
      f"--data_dir={d / 'tfds'}",
      f"--workdir={d / 'work'}",
      f"--out={out}",
      f"--arms={ARMS}",
      "--labels=100,50",
      "--folds=0",
      "--draws=2",
      "--seeds=0,1",
    ]
  )
  return d, result, json.loads(out.read_text())


def _eval_dir(d, arm, pct):
  version = f"v{synthetic_protocol.BENCH_VERSION}"
  return d / "work" / version / "bench" / f"eval_{arm}_{pct}"


def test_results_json_has_the_table_the_mde_and_the_gate(bench):
  _, result, saved = bench
  assert saved["gate"] in ("PASS", "FAIL")
  assert saved["gate"] == result["gate"]
  assert saved["mde"] > 0 and saved["gate_labels"] == 50
  keys = {
    "arm",
    "labels",
    "heldout_acc",
    "heldout_ci95",
    "fold_acc",
    "diff_vs_scratch",
    "diff_vs_scratch_ci95",
    "linear_probe_acc",
    "identity_probe_acc",
    "wall_s",
  }
  rows = {(r["arm"], r["labels"]): r for r in saved["rows"]}
  assert set(rows) == {(a, p) for a in ARMS.split(",") for p in (100, 50)}
  for (arm, _), r in rows.items():
    assert keys <= set(r)
    assert r["runs"] == 2  # 1 fold x (2 seeds at 100%, 2 draws at 50%)
    for k in ("heldout_acc", "fold_acc", "linear_probe_acc"):
      assert 0 <= r[k] <= 1
    lo, hi = r["heldout_ci95"]
    assert lo <= r["heldout_acc"] <= hi
    if arm == "scratch":
      assert r["diff_vs_scratch"] is None
    else:
      lo, hi = r["diff_vs_scratch_ci95"]
      assert lo <= r["diff_vs_scratch"] <= hi
      # The paired difference is over the same runs: recompute it.
      base = rows[("scratch", r["labels"])]["heldout_run_acc"]
      mine = r["heldout_run_acc"]
      assert set(mine) == set(base)
      want = np.mean([mine[k] - base[k] for k in mine])
      assert r["diff_vs_scratch"] == pytest.approx(want)
  g = saved["gate_detail"]
  sup = rows[("supervised_pool", 50)]["heldout_run_acc"]
  ident = rows[("identity_pool", 50)]["heldout_run_acc"]
  assert g["diff"] == pytest.approx(np.mean([sup[k] - ident[k] for k in sup]))
  assert saved["gate"] == ("PASS" if g["diff"] >= 3 * saved["mde"] else "FAIL")
  # The frozen-feature readout has its own paired differences and gate.
  for (arm, pct), r in rows.items():
    lo, hi = r["linear_probe_ci95"]
    assert lo <= r["linear_probe_acc"] <= hi
    if arm != "scratch":
      base = rows[("scratch", pct)]["linear_probe_run_acc"]
      mine = r["linear_probe_run_acc"]
      want = np.mean([mine[k] - base[k] for k in mine])
      assert r["linear_diff_vs_scratch"] == pytest.approx(want)
  sup = rows[("supervised_pool", 50)]["linear_probe_run_acc"]
  ident = rows[("identity_pool", 50)]["linear_probe_run_acc"]
  g = saved["linear_gate_detail"]
  assert g["diff"] == pytest.approx(np.mean([sup[k] - ident[k] for k in sup]))
  assert saved["linear_mde"] > 0
  assert saved["linear_gate"] == (
    "PASS" if g["diff"] >= 3 * saved["linear_mde"] else "FAIL"
  )


def test_budgets_are_equal_across_label_fractions(bench):
  d, _, _ = bench
  steps = {}
  for pct in (100, 50):
    folds = sorted((_eval_dir(d, "scratch", pct) / "folds").iterdir())
    assert len(folds) == 2
    for path in folds:
      fold = json.loads(path.read_text())
      steps.setdefault(pct, set()).add(
        (fold["linear"]["log"][-1]["step"], fold["finetune"]["log"][-1]["step"])
      )
      if pct == 50:  # whole subjects: 2 of the 4 training subjects
        assert fold["num_train_subjects"] == 2 and fold["num_train"] == 12
  assert steps[100] == steps[50] == {(4, 3)}  # the tiny recipe's budget


def test_runs_are_paired_by_name_and_store_held_out_logits(bench):
  d, _, _ = bench
  names = {}
  for arm in ("scratch", "supervised_pool"):
    logits = _eval_dir(d, arm, 50) / "logits"
    names[arm] = sorted(p.name for p in logits.iterdir())
    z = np.load(logits / names[arm][0])
    assert z["finetune_heldout"].shape == (24, 6)  # tiny_heldout: 4 x 6
    assert z["linear_heldout"].shape == (24, 6)
    assert sorted(set(z["heldout_subjects"].tolist())) == [
      3001,
      3002,
      3003,
      3004,
    ]
    np.testing.assert_allclose(np.exp(z["finetune_heldout"]).sum(-1), 1, 1e-5)
  assert names["scratch"] == names["supervised_pool"]
  assert names["scratch"] == [f"fold_00_d{d}_s0.npz" for d in (0, 1)]
  # The subsets of a run are the same in every arm (seeded by the run).
  for name in names["scratch"]:
    a, b = (
      json.loads(
        (
          _eval_dir(d, arm, 50) / "folds" / name.replace("npz", "json")
        ).read_text()
      )
      for arm in ("scratch", "supervised_pool")
    )
    assert a["num_train"] == b["num_train"]
    assert a["test_video_ids"] == b["test_video_ids"]


def test_controls_are_encoders_the_protocol_restores(bench):
  d, _, _ = bench
  version = f"v{synthetic_protocol.BENCH_VERSION}"
  for arm, classes in (
    ("supervised_pool", 6),
    ("identity_pool", 12),
    ("shuffled_pool", 6),
  ):
    work = d / "work" / version / f"pretrain_{arm}"
    assert supervised_pretrain.is_done(str(work))
    done = json.loads((work / supervised_pretrain.DONE_FILE).read_text())
    assert done["classes"] == classes
    rep = json.loads((_eval_dir(d, arm, 100) / "report.json").read_text())
    assert rep["init"]["init"] == "st-clr" and rep["init"]["step"] == 6
    assert rep["init"]["path"] == str(work / "checkpoints")


def test_control_targets():
  labels = np.tile(np.arange(6), 20)
  subjects = np.repeat(np.arange(101, 121), 6)
  y, k = supervised_pretrain.targets("expression", labels, subjects, 0)
  assert k == 6 and np.array_equal(y, labels)
  y, k = supervised_pretrain.targets("identity", None, subjects, 0)
  assert k == 20 and np.array_equal(y, subjects - 101)
  y, k = supervised_pretrain.targets("shuffled", labels, subjects, 0)
  assert k == 6 and np.array_equal(np.bincount(y), np.bincount(labels))
  assert np.mean(y == labels) < 0.5  # the video-label link is broken
  again, _ = supervised_pretrain.targets("shuffled", labels, subjects, 0)
  assert np.array_equal(y, again)
  with pytest.raises(ValueError, match="needs a labelled data set"):
    supervised_pretrain.targets("expression", None, subjects, 0)
  with pytest.raises(ValueError, match="target must be one of"):
    supervised_pretrain.targets("gender", labels, subjects, 0)


def test_pretext_arms_are_paired_with_stclr_as_well_as_scratch():
  """A pretext arm's row carries its paired difference to plain ST-CLR
  (the same runs by name), for both readouts; other arms' rows do not."""
  rng = np.random.default_rng(0)
  subjects = np.repeat(np.arange(10), 6)

  def runs(p):
    return {
      f"fold_00_d{d}_s0": {
        "fold_acc": 0.5,
        "correct": rng.uniform(size=60) < p + 0.05 * d,
        "linear_correct": rng.uniform(size=60) < p,
        "subjects": subjects,
      }
      for d in range(3)
    }

  res = {
    a: {"runs": runs(p), "report": {}}
    for a, p in (("scratch", 0.2), ("stclr", 0.3), ("stclr_faceswap", 0.5))
  }
  r = synthetic_protocol.row(
    "stclr_faceswap",
    0.1,
    res["stclr_faceswap"],
    res["scratch"],
    1.0,
    stclr=res["stclr"],
  )
  for key, prefix in (("correct", ""), ("linear_correct", "linear_")):
    mine, base = (res[a]["runs"] for a in ("stclr_faceswap", "stclr"))
    want = np.mean(
      [np.mean(mine[n][key]) - np.mean(base[n][key]) for n in mine]
    )
    assert r[f"{prefix}diff_vs_stclr"] == pytest.approx(want)
    lo, hi = r[f"{prefix}diff_vs_stclr_ci95"]
    assert lo <= want <= hi
  plain = synthetic_protocol.row(
    "stclr", 0.1, res["stclr"], res["scratch"], 1.0, stclr=res["stclr"]
  )
  assert "diff_vs_stclr" not in plain
  # A masked-autoencoding arm: against stclr and its encoder from scratch
  # (here stood in for by stclr_faceswap's runs).
  mae = synthetic_protocol.row(
    "mae_tpsbt",
    0.1,
    res["stclr_faceswap"],
    res["scratch"],
    1.0,
    stclr=res["stclr"],
    family=res["stclr"],
  )
  for prefix in ("", "linear_"):
    assert mae[f"{prefix}diff_vs_family_scratch"] == pytest.approx(
      r[f"{prefix}diff_vs_stclr"]
    )
    assert mae[f"{prefix}diff_vs_stclr"] == r[f"{prefix}diff_vs_stclr"]
  assert "diff_vs_family_scratch" not in r


def test_linear_only_runs_the_linear_phase_into_its_own_dir(bench):
  """--linear_only: no fine-tuning, its runs in eval_<arm>_<pct>_linear,
  and the held-out column is the linear probe's (the full runs' linear
  phase: the same accuracy as the fixture's scratch rows)."""
  d, _, saved = bench
  out = d / "linear.json"
  synthetic_protocol.main(
    [
      "--tiny",
      f"--data_dir={d / 'tfds'}",
      f"--workdir={d / 'work'}",
      f"--out={out}",
      "--arms=scratch",
      "--labels=50",
      "--folds=0",
      "--draws=2",
      "--linear_only",
    ]
  )
  row = json.loads(out.read_text())["rows"][0]
  assert row["heldout_acc"] == row["linear_probe_acc"]
  full = {(r["arm"], r["labels"]): r for r in saved["rows"]}
  assert row["linear_probe_acc"] == pytest.approx(
    full[("scratch", 50)]["linear_probe_acc"]
  )
  folds = list((_eval_dir(d, "scratch", "50_linear") / "folds").iterdir())
  assert len(folds) == 2
  for path in folds:
    assert "finetune" not in json.loads(path.read_text())


def test_encoder_arms_evaluate_a_random_transformer(monkeypatch, tmp_path):
  """``scratch_tpsbt`` and ``scratch_vit``: no pretraining, the protocol
  run with the family's encoder (the tiny sizes under --tiny), on the
  arm's own eval dir; the run itself is tests/evaluation_protocol_test's."""
  seen = {}

  def fake(config, workdir):
    seen[os.path.basename(workdir)] = (config.model.encoder, config.init_from)
    return {}

  monkeypatch.setattr(synthetic_protocol.protocol, "evaluate", fake)
  monkeypatch.setattr(synthetic_protocol.compare, "load_runs", lambda *a: {})
  args = synthetic_protocol.parse_args(
    ["--tiny", f"--data_dir={tmp_path}", f"--workdir={tmp_path}"]
  )
  for arm, size in synthetic_protocol.ENCODER_ARMS.items():
    assert synthetic_protocol.pretrain(arm, args, {}) == ""
    synthetic_protocol.evaluate(arm, "", 10, args, {})
    assert seen[f"eval_{arm}_10"] == (size.replace("_cpu", "_tiny"), "")
  assert synthetic_protocol.ENCODER_ARMS == {
    "scratch_tpsbt": "tpsbt_cpu",
    "scratch_vit": "vit_cpu",
  }


def test_mae_arms_pretrain_with_svfaps_config_and_evaluate_their_encoder(
  monkeypatch, tmp_path
):
  """``mae_tpsbt`` and ``mae_vit`` pretrain with configs/svfap_synthetic.py
  and its encoder (the tiny sizes under --tiny), and their evaluation runs
  that encoder from the pretraining workdir; the runs themselves are
  tests/pretext_mae_test's."""
  seen = {}

  def fake_pretrain(config, workdir):
    seen[os.path.basename(workdir)] = (
      config.model.encoder,
      config.pretext.mae.enabled,
      config.optim.name,
    )
    assert config.optim.learning_rate == 0.003  # --pretrain_set
    return {"history": []}

  def fake_eval(config, workdir):
    seen[os.path.basename(workdir)] = (config.model.encoder, config.init_from)
    return {}

  monkeypatch.setattr(synthetic_protocol.train, "pretrain", fake_pretrain)
  monkeypatch.setattr(synthetic_protocol.protocol, "evaluate", fake_eval)
  monkeypatch.setattr(synthetic_protocol.compare, "load_runs", lambda *a: {})
  args = synthetic_protocol.parse_args(
    [
      "--tiny",
      f"--data_dir={tmp_path}",
      f"--workdir={tmp_path}",
      "--pretrain_set=optim.learning_rate=0.003",
    ]
  )
  assert synthetic_protocol.MAE_ARMS == {
    "mae_tpsbt": "tpsbt_cpu",
    "mae_vit": "vit_cpu",
  }
  for arm, size in synthetic_protocol.MAE_ARMS.items():
    tiny = size.replace("_cpu", "_tiny")
    init = synthetic_protocol.pretrain(arm, args, {})
    assert seen[f"pretrain_{arm}"] == (tiny, True, "adamw")
    synthetic_protocol.evaluate(arm, init, 10, args, {})
    assert seen[f"eval_{arm}_10"] == (tiny, init)
