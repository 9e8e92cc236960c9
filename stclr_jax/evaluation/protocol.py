"""The evaluation protocol's driver: ``evaluate(config, workdir)``
(``python -m stclr_jax.main --mode=evaluate``).

1. The encoder of ``config.init_from`` (a pretraining workdir: projection
   head dropped; a converted Kinetics-400 checkpoint; or random weights: the
   from-scratch baseline), and a new linear layer.
2. k-fold cross-validation (by subject by default). In each fold, on
   ``eval.label_fraction`` of the training videos (class-stratified):
   the linear layer for ``eval.linear_epochs`` with the encoder frozen
   (:mod:`~stclr_jax.evaluation.linear`), then (unless ``eval.linear_only``)
   the whole model for ``eval.finetune_epochs``
   (:mod:`~stclr_jax.evaluation.finetune`); Adam, reduce-on-plateau.
3. Each finished fold is written to ``DIR/folds/fold_KK.json``; a rerun
   skips the folds already there. ``DIR/report.json`` holds per-fold
   accuracies, mean and std, per-class accuracy and the confusion matrix
   summed over folds, for the linear probe and for fine-tuning;
   ``DIR/confusion.png`` draws the final one; ``DIR/embeddings.{npz,png}``
   hold the initial encoder's features of every video.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from flax import nnx

from stclr_jax import init_from
from stclr_jax import mesh as mesh_lib
from stclr_jax.data import input as input_lib
from stclr_jax.evaluation import finetune, linear, probes
from stclr_jax.evaluation import folds as folds_lib
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import report as report_lib
from stclr_jax.models import factory

# Fields that choose what runs, not what a fold computes.
_NOT_IN_FINGERPRINT = (
  "run_folds",
  "export_embeddings",
  "log_test_every",
  "subset_draws",
  "train_seeds",
)


def fingerprint(config) -> str:
  """A hash of everything in ``config`` that changes a fold's result."""
  c = json.loads(config.to_json_best_effort())
  for k in _NOT_IN_FINGERPRINT:
    c.get("eval", {}).pop(k, None)
  digest = hashlib.sha256(json.dumps(c, sort_keys=True).encode())
  return digest.hexdigest()[:16]


def read_json(path: str):
  """A JSON file, with an error naming it when it is corrupt."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(
      f"{path}: not valid JSON ({e}); delete it to recompute"
    ) from None


def reestimate_batch_stats(config) -> bool:
  """Whether each fold re-estimates BatchNorm's running statistics on its
  training videos before the linear phase (``eval.bn_reestimate``: "on",
  "off", or "auto": on for a random encoder, ``init_from=""``, whose
  running statistics are still the initial mean 0 and variance 1, so its
  frozen features would be mis-normalised)."""
  mode = config.eval.get("bn_reestimate", "auto")
  if mode not in ("auto", "on", "off"):
    raise ValueError(
      f"eval.bn_reestimate must be 'auto', 'on' or 'off', got {mode!r}"
    )
  return mode == "on" or (mode == "auto" and not config.init_from)


def split_metadata(builder, split: str) -> dict:
  """Labels, subject ids and video ids of a split, in reading order,
  without decoding the frames."""
  ds = builder.as_dataset(
    split=split,
    shuffle_files=False,
    decoders={"video": tfds.decode.SkipDecoding()},
  )
  rows = {"label": [], "subject_id": [], "video_id": []}
  for ex in ds.as_numpy_iterator():
    rows["label"].append(int(ex["label"]))
    rows["subject_id"].append(int(ex.get("subject_id", -1)))
    vid = ex.get("video_id", b"")
    rows["video_id"].append(
      vid.decode() if isinstance(vid, bytes) else str(vid)
    )
  return {k: np.asarray(v) for k, v in rows.items()}


def _eval_batches(videos, n, indices, config, batch_size):
  return eval_input.eval_dataset(
    eval_input.select(videos, n, indices),
    len(indices),
    batch_size=batch_size,
    clip_len=config.data.clip_len,
    size=config.data.size,
  ).as_numpy_iterator()


def _check_workdir(config, workdir: str) -> str:
  """The config's fingerprint, after checking that ``workdir`` holds no
  folds of another config; records the config there."""
  fp = fingerprint(config)
  cfg_path = os.path.join(workdir, "eval_config.json")
  if os.path.exists(cfg_path):
    old = read_json(cfg_path).get("fingerprint")
    if old != fp:
      raise ValueError(
        f"{workdir} holds folds of another evaluation config (fingerprint "
        f"{old}, this one {fp}; see {cfg_path}): use a new --workdir"
      )
  report_lib.write_json(
    cfg_path,
    {"fingerprint": fp, "config": json.loads(config.to_json_best_effort())},
  )
  return fp


def evaluate(config, workdir: str) -> dict:
  """Runs (or resumes) the protocol; returns the report."""
  if jax.process_count() > 1:
    raise NotImplementedError(
      "--mode=evaluate runs on one host (all its local devices); it was "
      f"started on {jax.process_count()} processes"
    )
  ev = config.eval
  fold_dir = os.path.join(workdir, "folds")
  os.makedirs(fold_dir, exist_ok=True)
  fp = _check_workdir(config, workdir)

  builder = input_lib.prepared_builder(config.data)
  split = config.data.split
  n = builder.info.splits[split].num_examples
  if "label" not in builder.info.features:
    raise ValueError(
      f"{config.data.name} has no labels: evaluation needs a labelled data "
      "set (an unlabelled one, such as synthetic_expressions/expressive_pool, "
      "is for pretraining; label videos by folder, <label>/[<subject>/]"
      "<video>, or with a CSV label column)"
    )
  class_names = list(builder.info.features["label"].names)
  meta = split_metadata(builder, split)
  what = f"{config.data.name} ({split})"
  fold_tests = folds_lib.make_folds(
    ev.fold_by,
    meta["label"],
    meta["subject_id"],
    ev.num_folds,
    config.seed,
    what,
  )
  run = folds_lib.parse_run_folds(ev.run_folds, ev.num_folds)
  plan = units(ev, run)
  done = {}
  for unit in plan:
    path = os.path.join(fold_dir, f"{unit_name(*unit)}.json")
    if os.path.exists(path):
      done[unit] = read_json(path)
  todo = [u for u in plan if u not in done]
  logging.info(
    "%d folds by %s; running %s, %d runs (%d already done)",
    ev.num_folds,
    ev.fold_by,
    run,
    len(plan),
    len(done),
  )

  mesh = mesh_lib.make_mesh()
  pretrained = factory.create_model(config, mesh.size)
  init_info = init_from.init_encoder(config, pretrained)
  model = finetune.Classifier(
    pretrained.encoder, len(class_names), rngs=nnx.Rngs(config.seed + 1)
  )
  runner = finetune.runner_for(model, mesh, config.data.mean, config.data.std)
  # Host copies: every fold starts from them (the train step donates).
  params = jax.device_get(nnx.state(model, nnx.Param))
  batch_stats = jax.device_get(nnx.state(model, nnx.BatchStat))
  batch = config.batch_size - config.batch_size % mesh.size
  if batch < mesh.size:
    raise ValueError(
      f"batch_size {config.batch_size} is smaller than the {mesh.size} devices"
    )
  videos = eval_input.cached_videos(
    builder.as_dataset(split=split, shuffle_files=False),
    config.data.cache_frame_size or None,
  )
  steps_budget = finetune.budget(ev) == "steps"
  store = (
    eval_input.video_store(videos, n, what)
    if todo and steps_budget and not ev.linear_only
    else None
  )
  heldout = Heldout.load(config, class_names) if todo else None

  reestimate = reestimate_batch_stats(config)
  init_info["bn_reestimated"] = reestimate
  feats = None
  heldout_feats = None
  emb_prefix = os.path.join(workdir, "embeddings")
  if todo or (ev.export_embeddings and not os.path.exists(emb_prefix + ".npz")):
    t0 = time.time()
    every = _eval_batches(videos, n, np.arange(n), config, batch)
    # With re-estimation, the exported features use statistics of every
    # video (no labels); each fold's linear phase re-estimates on its own.
    emb_stats = (
      runner.reestimate_batch_stats((params, batch_stats), every)
      if reestimate
      else batch_stats
    )
    feats, labels = runner.features(
      (params, emb_stats),
      _eval_batches(videos, n, np.arange(n), config, batch),
    )
    if not np.array_equal(labels, meta["label"]):
      raise RuntimeError("internal: features are not in the split's order")
    if heldout is not None and not reestimate:
      heldout_feats = heldout.features(runner, (params, batch_stats), batch)
    logging.info("features of %d videos in %.1fs", n, time.time() - t0)
    if ev.export_embeddings:
      report_lib.export_embeddings(
        emb_prefix,
        feats,
        meta["label"],
        meta["subject_id"],
        meta["video_id"],
        class_names,
        title=f"initial encoder ({init_info['init']}) features, PCA",
      )

  tx = step_fn = None
  for unit in todo:
    f, draw, tseed = unit
    name = unit_name(*unit)
    t0 = time.time()
    test = fold_tests[f]
    train_idx = folds_lib.label_subset(
      ev.get("subset", "stratified"),
      folds_lib.train_indices(test, n),
      meta["label"],
      meta["subject_id"],
      ev.label_fraction,
      subset_seed(config, f, draw),
    )
    seed = train_seed(config, f, tseed)
    if steps_budget:
      fb = batch
    else:
      fb = min(batch, len(train_idx) - len(train_idx) % mesh.size)
    fold_stats, fold_feats, fold_heldout = batch_stats, feats, heldout_feats
    if reestimate:
      fold_stats = runner.reestimate_batch_stats(
        (params, batch_stats),
        _eval_batches(videos, n, train_idx, config, batch),
      )
      used = np.union1d(train_idx, test)  # in reading order, as select
      part, _ = runner.features(
        (params, fold_stats), _eval_batches(videos, n, used, config, batch)
      )
      fold_feats = np.zeros((n, part.shape[1]), part.dtype)
      fold_feats[used] = part
      if heldout is not None:
        fold_heldout = heldout.features(runner, (params, fold_stats), batch)
    lin, lin_log = linear.train_linear(
      fold_feats[train_idx],
      meta["label"][train_idx],
      len(class_names),
      epochs=ev.linear_epochs,
      batch_size=fb,
      learning_rate=ev.linear_learning_rate,
      ev=ev,
      seed=seed,
      standardize=ev.linear_standardize,
      steps=int(ev.get("linear_steps", 0)) if steps_budget else 0,
    )
    lin_test = linear.linear_logits(lin, fold_feats[test])
    lin_cm = report_lib.confusion(
      meta["label"][test], lin_test.argmax(-1), len(class_names)
    )
    result = {
      "fold": f,
      "fingerprint": fp,
      "test_subjects": sorted(set(meta["subject_id"][test].tolist())),
      "num_train": int(len(train_idx)),
      "num_train_subjects": int(len(np.unique(meta["subject_id"][train_idx]))),
      "num_test": int(len(test)),
      "test_video_ids": meta["video_id"][test].tolist(),
      "linear": {
        "confusion": lin_cm.tolist(),
        "log": lin_log,
        "accuracy": report_lib.accuracy(lin_cm),
      },
    }
    if name != f"fold_{f:02d}":
      result.update(unit=name, draw=draw, train_seed=tseed)
    logits = {
      "test_index": test,
      "test_labels": meta["label"][test],
      "linear_test": lin_test,
    }
    if heldout is not None:
      logits["linear_heldout"] = linear.linear_logits(lin, fold_heldout)
      result["linear"]["heldout_accuracy"] = heldout.accuracy(
        logits["linear_heldout"]
      )
    if not ev.linear_only and _finetune_length(ev) > 0:
      curve = None
      if ev.get("log_test_every", 0) > 0:
        last = _finetune_epochs(ev, len(train_idx), fb)

        def curve(epoch, state, test=test, last=last):
          if epoch % ev.log_test_every and epoch != last:
            return None
          preds, labels = runner.predict(
            (state.params, state.batch_stats),
            _eval_batches(videos, n, test, config, batch),
          )
          return {"test_accuracy": float(np.mean(preds == labels))}

      if step_fn is None:
        tx, step_fn = runner.make_train_step(
          ev.learning_rate, float(ev.get("head_lr_mult", 1.0))
        )
      if ev.get("head_init", "linear") == "zero":
        w0 = np.zeros_like(lin["w"])
        b0 = np.zeros_like(lin["b"])
      else:
        w0, b0 = lin["w"], lin["b"]
      state, ft_log = finetune.finetune_fold(
        runner,
        step_fn,
        tx,
        params=finetune.with_head(params, w0, b0),
        batch_stats=fold_stats,
        videos=videos,
        num_videos=n,
        train_idx=train_idx,
        config=config,
        batch_size=fb,
        fold=f,
        on_epoch_end=curve,
        store=store,
        seed=seed,
      )
      variables = (state.params, state.batch_stats)
      logp, labels = runner.log_probs(
        variables, _eval_batches(videos, n, test, config, batch)
      )
      cm = report_lib.confusion(labels, logp.argmax(-1), len(class_names))
      result["finetune"] = {
        "confusion": cm.tolist(),
        "accuracy": report_lib.accuracy(cm),
        "log": ft_log,
      }
      logits["finetune_test"] = logp
      if heldout is not None:
        logits["finetune_heldout"] = heldout.log_probs(runner, variables, batch)
        result["finetune"]["heldout_accuracy"] = heldout.accuracy(
          logits["finetune_heldout"]
        )
    if heldout is not None:
      result["heldout"] = heldout.describe()
    os.makedirs(os.path.join(workdir, "logits"), exist_ok=True)
    np.savez(
      os.path.join(workdir, "logits", f"{name}.npz"),
      **{k: np.asarray(v) for k, v in logits.items()},
      **(heldout.arrays() if heldout is not None else {}),
    )
    result["seconds"] = round(time.time() - t0, 1)
    report_lib.write_json(os.path.join(fold_dir, f"{name}.json"), result)
    done[unit] = result
    logging.info(
      "%s: linear %.3f%s (%.0fs)",
      name,
      result["linear"]["accuracy"],
      f", fine-tuned {result['finetune']['accuracy']:.3f}"
      if "finetune" in result
      else "",
      result["seconds"],
    )
  return write_report(
    config, workdir, [done[u] for u in plan], class_names, init_info
  )


def units(ev, run: list[int]) -> list[tuple[int, int, int | None]]:
  """The runs of an evaluation, ``(fold, draw, train seed)``: every fold of
  ``run`` x ``eval.subset_draws`` label subsets (one at 100% labels, where
  every draw is the whole training part) x ``eval.train_seeds`` (``""``:
  one run, seeded by ``config.seed`` and the fold: ``None``)."""
  draws = int(ev.get("subset_draws", 1)) if ev.label_fraction < 1 else 1
  if draws < 1:
    raise ValueError(f"eval.subset_draws must be >= 1, got {draws}")
  spec = str(ev.get("train_seeds", "")).strip()
  try:
    seeds = [int(x) for x in spec.split(",") if x.strip()] or [None]
  except ValueError:
    raise ValueError(
      f"eval.train_seeds={spec!r}: expected comma-separated integers"
    ) from None
  if any(s is not None and s < 0 for s in seeds):
    raise ValueError(f"eval.train_seeds={spec!r}: seeds must be >= 0")
  return [(f, d, s) for f in run for d in range(draws) for s in seeds]


def unit_name(fold: int, draw: int, tseed: int | None) -> str:
  """``fold_KK`` (draw 0, the config's seed), else ``fold_KK_dD_sS``."""
  name = f"fold_{fold:02d}"
  if draw or tseed is not None:
    name += f"_d{draw}_s{tseed if tseed is not None else 'cfg'}"
  return name


def subset_seed(config, fold: int, draw: int):
  """The seed of a run's label subset: ``(eval.subset_seed, fold, draw)``;
  with ``eval.subset_seed < 0``, from ``config.seed`` and the fold (the
  same numbers as the training seed's default)."""
  base = int(config.eval.get("subset_seed", -1))
  if base < 0:
    legacy = config.seed * 1009 + fold
    return legacy if draw == 0 else [legacy, draw]
  return [base, fold, draw]


def train_seed(config, fold: int, tseed: int | None) -> int:
  """The seed of a run's training (head initialisation, minibatch order,
  clips and augmentation): one of ``eval.train_seeds`` and the fold, apart
  from the fold and subset seeds; ``None``: ``config.seed * 1009 + fold``."""
  if tseed is None:
    return config.seed * 1009 + fold
  return 1_000_003 * (tseed + 1) + fold


def _finetune_length(ev) -> int:
  if finetune.budget(ev) == "steps":
    return int(ev.get("finetune_steps", 0))
  return int(ev.finetune_epochs)


def _finetune_epochs(ev, num_train: int, batch: int) -> int:
  """The last "epoch" of fine-tuning's log (steps: an epoch's worth)."""
  if finetune.budget(ev) == "steps":
    per_epoch = max(1, num_train // batch)
    return -(-int(ev.finetune_steps) // per_epoch)
  return int(ev.finetune_epochs)


class Heldout:
  """``eval.heldout_data``: a labelled population of other subjects, in
  neither the pool nor the folds, scored by every run's final model (its
  per-video log-probabilities are stored; BENCHMARKS.md, "The calibrated
  benchmark", ranks by it)."""

  def __init__(self, config, name, builder, class_names):
    split = config.data.split
    self.name = name
    self.n = builder.info.splits[split].num_examples
    self.meta = split_metadata(builder, split)
    self.config = config
    self.videos = eval_input.cached_videos(
      builder.as_dataset(split=split, shuffle_files=False),
      config.data.cache_frame_size or None,
    )

  @classmethod
  def load(cls, config, class_names):
    name = config.eval.get("heldout_data", "")
    if not name:
      return None
    data = config.data.copy_and_resolve_references()
    data.name = name
    builder = input_lib.prepared_builder(data)
    if "label" not in builder.info.features:
      raise ValueError(f"eval.heldout_data={name}: has no labels")
    names = list(builder.info.features["label"].names)
    if names != list(class_names):
      raise ValueError(
        f"eval.heldout_data={name}: classes {names}, the folds' data "
        f"{config.data.name} has {list(class_names)}"
      )
    return cls(config, name, builder, class_names)

  def _batches(self, batch):
    return _eval_batches(
      self.videos, self.n, np.arange(self.n), self.config, batch
    )

  def features(self, runner, variables, batch):
    feats, labels = runner.features(variables, self._batches(batch))
    self._check(labels)
    return feats

  def log_probs(self, runner, variables, batch):
    logp, labels = runner.log_probs(variables, self._batches(batch))
    self._check(labels)
    return logp

  def _check(self, labels):
    if not np.array_equal(labels, self.meta["label"]):
      raise RuntimeError("internal: held-out videos out of order")

  def accuracy(self, logits) -> float:
    return float(np.mean(np.argmax(logits, -1) == self.meta["label"]))

  def describe(self) -> dict:
    return {
      "data": self.name,
      "videos": int(self.n),
      "subjects": int(len(np.unique(self.meta["subject_id"]))),
    }

  def arrays(self) -> dict:
    return {
      "heldout_labels": self.meta["label"],
      "heldout_subjects": self.meta["subject_id"],
    }


def write_report(config, workdir, fold_results, class_names, init_info):
  """``report.json`` and ``confusion.png`` over the folds run."""
  ev = config.eval
  rep = {
    "init": init_info,
    "data": config.data.name,
    "encoder": config.model.encoder,
    "width": config.model.width,
    "fold_by": ev.fold_by,
    "num_folds": ev.num_folds,
    "folds_run": sorted({r["fold"] for r in fold_results}),
    "runs": [r.get("unit", r["fold"]) for r in fold_results],
    "label_fraction": ev.label_fraction,
    "class_names": class_names,
    "linear": report_lib.summarize(
      [
        {
          "fold": r.get("unit", r["fold"]),
          "confusion": r["linear"]["confusion"],
        }
        for r in fold_results
      ],
      class_names,
    ),
  }
  final = "linear"
  if (
    fold_results
    and all("finetune" in r for r in fold_results)
    and not ev.linear_only
  ):
    rep["finetune"] = report_lib.summarize(
      [
        {
          "fold": r.get("unit", r["fold"]),
          "confusion": r["finetune"]["confusion"],
        }
        for r in fold_results
      ],
      class_names,
    )
    final = "finetune"
  rep["final"] = final
  heldout = {}
  for phase in ("linear", "finetune"):
    accs = {
      str(r.get("unit", r["fold"])): r[phase]["heldout_accuracy"]
      for r in fold_results
      if "heldout_accuracy" in r.get(phase, {})
    }
    if accs and len(accs) == len(fold_results):
      heldout[phase] = {
        "run_accuracy": accs,
        "mean": float(np.mean(list(accs.values()))),
      }
  if heldout:
    heldout["population"] = fold_results[0]["heldout"]
    rep["heldout"] = heldout
  emb = os.path.join(workdir, "embeddings.npz")
  if os.path.exists(emb):
    d = np.load(emb)
    # What the initial encoder's frozen features tell about the subject
    # (ridge, leave one class out; chance 1 / subjects).
    rep["identity_probe"] = {
      "accuracy": probes.identity_accuracy(
        d["features"], d["labels"], d["subjects"]
      ),
      "subjects": len(np.unique(d["subjects"])),
    }
  rep["confusion_png"] = report_lib.confusion_png(
    rep[final]["confusion"],
    class_names,
    os.path.join(workdir, "confusion.png"),
    title=(
      f"{final}, {len(fold_results)} folds: "
      f"{100 * rep[final]['mean']:.1f} ± {100 * rep[final]['std']:.1f}%"
    ),
  )
  report_lib.write_json(os.path.join(workdir, "report.json"), rep)
  return rep
