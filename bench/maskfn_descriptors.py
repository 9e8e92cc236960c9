"""Which frozen descriptor makes MaskFN's false-negative choice right?

SSL-FER's MaskFN treats, per anchor, the negative whose eye and mouth crops
look most alike (by a frozen descriptor) as a false negative. Here the
expression labels are known (``synthetic_expressions/expressive``, 80
subjects x 6), so the choice can be scored: **precision** is the share of
anchors whose chosen negative ``k*`` shows the same expression. Batches
are drawn as pretraining draws them (``--batch`` videos at random, both
views of each, and with ``--hardneg`` the second pair), the views and crops
made by the pretraining stream's own element function
(:func:`stclr_jax.data.views.pretrain_views`), and ``k*`` by the loss's
own :func:`stclr_jax.losses.maskfn_false_negatives`.

Descriptors (``--descriptors``):

* ``hog``, ``pixels``: :func:`stclr_jax.descriptors.part_descriptors` of
  the crops (the library's options);
* ``encoder_parts``: a pretrained ST-CLR encoder (``--encoder``, frozen)
  on each crop shown as a still clip, eyes and mouth concatenated;
* ``encoder_rows``: the same encoder on the rows' augmented clips (what a
  stop-gradient copy of the trained encoder would compare).

Printed per descriptor: precision, the share of ``k*`` of the anchor's
own subject and (with ``--hardneg``) of its own video, and chance (the
same-expression share among each anchor's negatives from other videos).
Mean ± std over ``--seeds`` draws of the views.

  python bench/maskfn_descriptors.py \\
      --encoder=workdirs/protocol48/pretrain_stclr
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import tensorflow as tf  # noqa: E402

from stclr_jax import descriptors, init_from, losses  # noqa: E402
from stclr_jax.data import input as input_lib  # noqa: E402
from stclr_jax.data import videos, views  # noqa: E402
from stclr_jax.demo import load_config  # noqa: E402
from stclr_jax.models import factory  # noqa: E402
from stclr_jax.pretext import objectives  # noqa: E402

KINDS = ("hog", "pixels", "encoder_parts", "encoder_rows")


def videos_with_views(config, data_name, seed):
  """Every labelled video's pretraining element (views and crops) with its
  label and subject, as NumPy arrays."""
  data = config.data.copy_and_resolve_references()
  data.name = data_name
  builder = input_lib.prepared_builder(data)
  view = input_lib.view_spec(config)
  root = tf.constant([seed, 0x3E5], tf.int64)

  def element(i, ex):
    cached = videos.cacheable(
      ex, data.cache_frame_size or None, with_keypoints=True
    )
    cached["fps"] = tf.constant(view.pretext.default_fps)
    out = views.pretrain_views(
      tf.random.experimental.stateless_fold_in(root, i), cached, view
    )
    out["label"] = cached["label"]
    return out

  ds = builder.as_dataset(split="train", shuffle_files=False).enumerate()
  rows = list(ds.map(element).as_numpy_iterator())
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def encoder_fn(config, workdir):
  c = load_config(os.path.join(_ROOT, "configs", "finetune_synthetic.py"))
  c.init_from = workdir
  model = factory.create_model(c)
  info = init_from.restore_pretrained(c, model)
  model.eval()
  mean = jnp.asarray(config.data.mean, jnp.float32)
  std = jnp.asarray(config.data.std, jnp.float32)

  @jax.jit
  def features(x):
    return model.encoder((x - mean) / std)

  def batched(x, n=64):
    return np.concatenate(
      [
        np.asarray(features(jnp.asarray(x[i : i + n])))
        for i in range(0, len(x), n)
      ]
    )

  return batched, info


def describe(kind, rows, parts, encode, clip_len):
  """(R, D) descriptors of R rows: their clips (R, T, H, W, 3) in [0, 1]
  and crops (R, 2, S, S, 3) uint8."""
  if kind in ("hog", "pixels"):
    return np.asarray(descriptors.part_descriptors(jnp.asarray(parts), kind))
  if kind == "encoder_rows":
    return encode(rows)
  if kind == "encoder_parts":
    still = parts.astype(np.float32) / 255.0  # (R, 2, S, S, 3)
    r, p = still.shape[:2]
    clips = np.repeat(still.reshape(r * p, 1, *still.shape[2:]), clip_len, 1)
    return encode(clips).reshape(r, -1)
  raise ValueError(kind)


def score(desc_a, desc_b, label, subject, batch, repeats, rng, hard):
  """Precision of k* and the shares, over ``repeats`` random batches.
  With ``hard``, rows alternate (pair 1, pair 2) per video."""
  per = 2 if hard else 1  # rows per video per stack
  n = len(label)
  hits = same_subject = same_video = chance = count = 0.0
  for _ in range(repeats):
    vids = rng.choice(n, batch, replace=False)
    rows_a = desc_a[vids].reshape(batch * per, -1)
    rows_b = desc_b[vids].reshape(batch * per, -1)
    k = np.asarray(
      losses.maskfn_false_negatives(jnp.asarray(rows_a), jnp.asarray(rows_b))
    )
    video = np.tile(np.repeat(vids, per), 2)  # of each of the 2B rows
    lab, sub = label[video], subject[video]
    other = video[k] != video
    hits += np.sum((lab[k] == lab) & other)
    same_video += np.sum(~other)
    same_subject += np.sum((sub[k] == sub) & other)
    # Chance: same-label share among the negatives from other videos.
    diff = video[None, :] != video[:, None]
    chance += np.sum(
      np.sum((lab[None, :] == lab[:, None]) & diff, 1) / np.sum(diff, 1)
    )
    count += len(video)
  return {
    "precision": hits / count,
    "same_subject": same_subject / count,
    "same_video": same_video / count,
    "chance": chance / count,
  }


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  p.add_argument("--encoder", default="workdirs/protocol48/pretrain_stclr")
  p.add_argument("--data", default="synthetic_expressions/expressive")
  p.add_argument("--data_dir", default="", help="TFDS data dir")
  p.add_argument("--descriptors", default=",".join(KINDS))
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--repeats", type=int, default=200)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--hardneg", action="store_true")
  p.add_argument("--timeaug", action="store_true")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  t0 = time.time()
  config = load_config(os.path.join(_ROOT, "configs", "stclr_synthetic.py"))
  config.data.data_dir = args.data_dir
  config.pretext.maskfn.enabled = True
  config.pretext.hardneg.enabled = args.hardneg
  config.pretext.timeaug.enabled = args.timeaug
  kinds = [k for k in args.descriptors.split(",") if k]
  encode = None
  if any(k.startswith("encoder") for k in kinds):
    encode, info = encoder_fn(config, args.encoder)
    print(f"encoder: {info}", flush=True)
  results = {k: [] for k in kinds}
  for seed in range(args.seeds):
    v = videos_with_views(config, args.data, seed)
    views = {k: jnp.asarray(x) for k, x in v.items() if k != "label"}
    stacks = objectives.contrastive_views(views)
    parts = objectives.contrastive_pairs(
      views, "parts_a", "parts_b", "parts_hard_a", "parts_hard_b"
    )
    n, per = len(v["label"]), 2 if args.hardneg else 1
    for kind in kinds:
      d = [
        describe(
          kind,
          np.asarray(stacks[i]),
          np.asarray(parts[i]),
          encode,
          config.data.clip_len,
        ).reshape(n, per, -1)
        for i in (0, 1)
      ]
      r = score(
        d[0],
        d[1],
        v["label"],
        v["subject_id"],
        args.batch,
        args.repeats,
        np.random.default_rng(seed),
        args.hardneg,
      )
      results[kind].append(r)
      print(f"seed {seed} {kind}: {r}", flush=True)
  print(
    f"\n{args.data}, batches of {args.batch} videos"
    f"{' + hard negatives' if args.hardneg else ''}"
    f"{' + temporal shift' if args.timeaug else ''}, {args.repeats} "
    f"batches x {args.seeds} seeds; wall {time.time() - t0:.0f} s\n"
  )
  print(
    "| descriptor | precision of k* | chance | k* same subject |"
    " k* same video |"
  )
  print("| --- | --- | --- | --- | --- |")
  summary = {}
  for kind, rs in results.items():
    m = {
      k: (np.mean([r[k] for r in rs]), np.std([r[k] for r in rs]))
      for k in rs[0]
    }
    summary[kind] = m
    cell = lambda k, m=m: f"{100 * m[k][0]:.1f} ± {100 * m[k][1]:.1f}%"
    print(
      f"| {kind} | {cell('precision')} | {cell('chance')} |"
      f" {cell('same_subject')} | {cell('same_video')} |"
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "summary": summary}, f, indent=1)


if __name__ == "__main__":
  main()
