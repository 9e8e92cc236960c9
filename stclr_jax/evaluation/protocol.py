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
from absl import logging
from flax import nnx

from stclr_jax import init_from
from stclr_jax import mesh as mesh_lib
from stclr_jax.data import input as input_lib
from stclr_jax.evaluation import finetune, linear
from stclr_jax.evaluation import folds as folds_lib
from stclr_jax.evaluation import input as eval_input
from stclr_jax.evaluation import report as report_lib
from stclr_jax.evaluation import runner as runner_lib
from stclr_jax.evaluation import runs as runs_lib
from stclr_jax.evaluation.heldout import Heldout
from stclr_jax.models import factory
from stclr_jax.models.video_transformer import family

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
  if family(config.model.encoder) == "resnet":
    # The transformer recipe cannot change a ResNet's fold, so a new
    # recipe field does not orphan the ResNet runs already stored.
    c.get("eval", {}).pop("transformer", None)
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
  meta = eval_input.split_metadata(builder, split)
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
  plan = runs_lib.units(ev, run)
  done = {}
  for unit in plan:
    path = os.path.join(fold_dir, f"{runs_lib.unit_name(*unit)}.json")
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
  pretrained = factory.create_model(
    config, mesh.size, drop_path=factory.finetune_drop_path(config)
  )
  init_info = init_from.init_encoder(config, pretrained)
  model = runner_lib.Classifier(
    pretrained.encoder, len(class_names), rngs=nnx.Rngs(config.seed + 1)
  )
  runner = runner_lib.runner_for(model, mesh, config.data.mean, config.data.std)
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

  # An encoder without BatchNorm (a video transformer) has none to redo.
  reestimate = reestimate_batch_stats(config) and bool(
    jax.tree.leaves(batch_stats)
  )
  init_info["bn_reestimated"] = reestimate
  feats = None
  heldout_feats = None
  emb_prefix = os.path.join(workdir, "embeddings")
  if todo or (ev.export_embeddings and not os.path.exists(emb_prefix + ".npz")):
    t0 = time.time()
    every = eval_input.eval_batches(videos, n, np.arange(n), config, batch)
    # With re-estimation, the exported features use statistics of every
    # video (no labels); each fold's linear phase re-estimates on its own.
    emb_stats = (
      runner.reestimate_batch_stats((params, batch_stats), every)
      if reestimate
      else batch_stats
    )
    feats, labels = runner.features(
      (params, emb_stats),
      eval_input.eval_batches(videos, n, np.arange(n), config, batch),
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
    name = runs_lib.unit_name(*unit)
    t0 = time.time()
    test = fold_tests[f]
    train_idx = folds_lib.label_subset(
      ev.get("subset", "stratified"),
      folds_lib.train_indices(test, n),
      meta["label"],
      meta["subject_id"],
      ev.label_fraction,
      runs_lib.subset_seed(config, f, draw),
    )
    seed = runs_lib.train_seed(config, f, tseed)
    if steps_budget:
      fb = batch
    else:
      fb = min(batch, len(train_idx) - len(train_idx) % mesh.size)
    fold_stats, fold_feats, fold_heldout = batch_stats, feats, heldout_feats
    if reestimate:
      fold_stats = runner.reestimate_batch_stats(
        (params, batch_stats),
        eval_input.eval_batches(videos, n, train_idx, config, batch),
      )
      used = np.union1d(train_idx, test)  # in reading order, as select
      part, _ = runner.features(
        (params, fold_stats),
        eval_input.eval_batches(videos, n, used, config, batch),
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
    if not ev.linear_only and runs_lib.finetune_length(ev) > 0:
      curve = None
      if ev.get("log_test_every", 0) > 0:
        last = runs_lib.finetune_epochs(ev, len(train_idx), fb)

        def curve(epoch, state, test=test, last=last):
          if epoch % ev.log_test_every and epoch != last:
            return None
          preds, labels = runner.predict(
            (state.params, state.batch_stats),
            eval_input.eval_batches(videos, n, test, config, batch),
          )
          return {"test_accuracy": float(np.mean(preds == labels))}

      if runner.transformer:  # eval.transformer's recipe, per run length
        tx, step_fn, _ = runner.make_transformer_step(
          ev.transformer,
          runs_lib.finetune_steps(ev, len(train_idx), fb),
          fb,
        )
      elif step_fn is None:
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
        variables, eval_input.eval_batches(videos, n, test, config, batch)
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
  return report_lib.write_report(
    config, workdir, [done[u] for u in plan], class_names, init_info
  )
