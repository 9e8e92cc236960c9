"""Shared pieces of the ml-collections configs in ``configs/``.

Every config file defines ``get_config(arg=None)``; ``arg`` is the text after
the colon in ``--config=configs/<file>.py:<arg>``, a comma-separated list of
``key=value`` variants, e.g. ``encoder=r3d_18,aug=no_temporal,epochs=100``.
``batch_size`` is always the *global* batch (all devices of all hosts).
"""

from __future__ import annotations

import ml_collections

from stclr_jax.convert.kinetics import KINETICS_MEAN, KINETICS_STD

# Table IV ablations: which augmentation a variant switches off.
AUG_VARIANTS = ("all", "no_temporal", "no_crop", "no_color", "no_flip")
# ``pretext=`` variants (joined with "+"): the config.pretext switch each
# turns on.
PRETEXT_VARIANTS = {
  "timeaug": "temporal_shift",
  "hardneg": "hard_negatives",
  "samesubject": "same_subject_negatives",
  "maskfn": "maskfn",
  "clmex": "multi_view_positives",
}
ENCODERS = ("r2plus1d_18", "r3d_18", "mc3_18")


def base_config() -> ml_collections.ConfigDict:
  """Fields shared by all pretraining configs, at the paper's values where
  the paper gives them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 32  # global; not in the paper (see README)
  c.num_epochs = 1000  # paper: 1000 SSL epochs
  c.num_steps = -1  # > 0 overrides num_epochs
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.profile = False
  c.init_from = ""  # converted (Kinetics-400) or pretraining workdir

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "r2plus1d_18"
  c.model.width = 1.0
  c.model.dtype = "float32"  # compute dtype; params float32 (float64: x64)
  c.model.bn_per_device = False  # False: global (synchronised) BatchNorm
  c.model.proj_hidden = 0  # 0: the encoder's feature width
  c.model.proj_dim = 128
  # Last BatchNorm scale of each residual block at zero (not in the paper).
  c.model.zero_init_residual = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "oulu_casia/vis_strong"
  c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
  c.data.manual_dir = ""  # Oulu-CASIA's folder
  c.data.csv_path = ""  # for name="video_folder"
  c.data.split = "train"
  c.data.clip_len = 16
  c.data.size = 224
  c.data.num_shards = 0  # logical input shards; 0 = processes
  c.data.cache = True
  c.data.cache_frame_size = 0  # 0: cache frames at stored size
  c.data.mean = (0.0, 0.0, 0.0)  # input normalisation, on [0, 1] frames
  c.data.std = (1.0, 1.0, 1.0)

  c.aug = ml_collections.ConfigDict()
  c.aug.temporal_modes = "random,uniform,sequential"  # "" = no temporal aug
  c.aug.crop = True
  c.aug.crop_area = (0.08, 1.0)
  c.aug.crop_aspect = (3 / 4, 4 / 3)
  c.aug.flip = True
  c.aug.color = True
  c.aug.color_strength = 1.0
  c.aug.color_prob = 0.8
  c.aug.grayscale_prob = 0.2
  # Where the pretraining views' crop, flip and colour run: "host"
  # (tf.data), "device" (inside the jitted step, from the host's draws:
  # the host only decodes, samples and ships uint8 frames), or "auto":
  # "device" on GPU and TPU, "host" on CPU, where the "device" is the same
  # cores (BENCHMARKS.md, "Augmentation on the device").
  c.aug.placement = "auto"
  c.aug.ship_size = (0, 0)  # device path: (H, W) of shipped frames; 0: auto

  c.loss = ml_collections.ConfigDict()
  c.loss.temperature = 0.1  # not in the paper (see README)

  # Pretext options (stclr_jax/data/pretext.py, README "Pretext options"),
  # all off: the paper's ST-CLR. Defaults are SSL-FER's values.
  c.pretext = ml_collections.ConfigDict()
  c.pretext.temporal_shift = False  # SSL-FER's TimeAug, for clips
  c.pretext.shift_offsets = (0.48, 0.72, 0.96, 1.20, 1.44)  # seconds
  c.pretext.shift_weights = (5.0, 4.0, 3.0, 2.0, 1.0)
  c.pretext.hard_negatives = False  # SSL-FER's HardNeg, for clips
  c.pretext.hard_negative_gap = 2.88  # seconds
  # Ours: batches of batch/m subjects x m videos (needs subject ids).
  c.pretext.same_subject_negatives = False
  c.pretext.videos_per_subject = 2
  c.pretext.default_fps = 25.0  # for data sets without an fps feature
  # SSL-FER's MaskFN: per anchor, the negative whose eye and mouth crops
  # look most alike becomes a down-weighted positive (needs keypoints).
  c.pretext.maskfn = False
  c.pretext.maskfn_weight = 0.8  # SSL-FER's lambda
  c.pretext.maskfn_descriptor = "hog"  # "hog" | "pixels" (ours, no download)
  c.pretext.maskfn_crop_size = 64  # SSL-FER's crops
  # CL-MEx's multi-view positives: batches of whole groups (a 'group'
  # feature), every other member of a group a positive (multi-positive
  # NT-Xent, a reconstruction; README).
  c.pretext.multi_view_positives = False

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"  # "sgd" | "lars" | "adam"
  c.optim.learning_rate = 1e-3  # paper: 1e-3
  c.optim.momentum = 0.9  # paper: 0.9
  c.optim.weight_decay = 1e-4  # paper: 1e-4
  c.optim.schedule = "constant"  # "constant" | "cosine"
  c.optim.warmup_epochs = 0.0
  c.optim.grad_clip_norm = 0.0  # 0: no clipping
  return c


def synthetic_sizes(
  c: ml_collections.ConfigDict, tiny: bool = False, pool: bool = False
):
  """The CPU sizes of the synthetic configs (pretraining and evaluation
  share them, so a checkpoint of one fits the other); ``tiny``: the tiny
  data set and model, for tests. ``pool``: the unlabelled pretraining pool
  (other subjects, no labels) instead of the labelled set."""
  if tiny:
    c.data.name, c.data.clip_len, c.data.size = (
      "synthetic_expressions/tiny",
      4,
      32,
    )
    c.model.width, c.batch_size = 0.125, 8
  else:
    # Face crops with clear expressions, stored at 64 px, clips at 48 px:
    # a from-scratch encoder learns them; at 32 px, or on the "faces"
    # config's subtler expressions, it stays at chance (BENCHMARKS.md at
    # 6b7ade2, "Synthetic benchmark").
    c.data.name, c.data.clip_len, c.data.size = (
      "synthetic_expressions/expressive",
      8,
      48,
    )
    c.model.width = 0.25
  if pool:
    c.data.name += "_pool"
  return c


def parse_arg(arg: str | None) -> dict[str, str]:
  """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``; errors name the bad part."""
  out = {}
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      raise ValueError(f"config argument {part!r} is not key=value")
    k, v = part.split("=", 1)
    out[k.strip()] = v.strip()
  return out


def apply_variants(
  c: ml_collections.ConfigDict, arg: str | None, extra: tuple[str, ...] = ()
) -> ml_collections.ConfigDict:
  """Applies the ablation variants ``encoder=``, ``aug=``, ``epochs=``,
  ``init=`` and ``pretext=`` (e.g. ``pretext=timeaug+hardneg``; options
  of :data:`PRETEXT_VARIANTS`, or ``none``)."""
  known = ("encoder", "aug", "epochs", "init", "pretext") + extra
  variants = parse_arg(arg)
  for k in variants:
    if k not in known:
      raise ValueError(f"unknown config variant {k!r}; known: {known}")
  if "encoder" in variants:
    if variants["encoder"] not in ENCODERS:
      raise ValueError(f"encoder must be one of {ENCODERS}")
    c.model.encoder = variants["encoder"]
  aug = variants.get("aug", "all")
  if aug not in AUG_VARIANTS:
    raise ValueError(f"aug must be one of {AUG_VARIANTS}, got {aug!r}")
  if aug == "no_temporal":
    c.aug.temporal_modes = ""
  elif aug != "all":
    setattr(c.aug, aug[len("no_") :], False)
  if "epochs" in variants:
    c.num_epochs = int(variants["epochs"])
  for name in filter(None, variants.get("pretext", "none").split("+")):
    if name == "none":
      continue
    if name not in PRETEXT_VARIANTS or "pretext" not in c:
      raise ValueError(
        f"pretext must be none or options of {tuple(PRETEXT_VARIANTS)} "
        f"joined with '+', got {variants['pretext']!r}"
      )
    setattr(c.pretext, PRETEXT_VARIANTS[name], True)
  init = variants.get("init", "random")
  if init == "kinetics400":
    # Weights from `python -m stclr_jax.convert.torchvision` (pass the
    # directory as --config.init_from); they expect Kinetics statistics.
    c.data.mean, c.data.std = tuple(KINETICS_MEAN), tuple(KINETICS_STD)
  elif init != "random":
    raise ValueError(f"init must be random or kinetics400, got {init!r}")
  return c


def finetune_config() -> ml_collections.ConfigDict:
  """Fields of the evaluation configs (``--mode=evaluate``): the paper's
  fine-tuning protocol (Sec. III-B, IV-A) under subject-independent k-fold
  cross-validation."""
  c = base_config()
  for k in (
    "num_epochs",
    "num_steps",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "profile",
    "aug",
    "loss",
    "pretext",
    "optim",
  ):
    del c[k]
  c.batch_size = 16  # global; not in the paper
  # A pretraining workdir (or its checkpoints/ folder), or a converted
  # Kinetics-400 checkpoint; "" = random initialisation (from scratch).
  c.init_from = ""
  c.init_step = -1  # pretraining step to restore; -1 = latest

  c.eval = ml_collections.ConfigDict()
  c.eval.num_folds = 10  # paper: 10-fold cross-validation
  c.eval.fold_by = "subject"  # "subject" (independent) | "video"
  c.eval.run_folds = ""  # e.g. "0,1,2"; "" = every fold
  c.eval.label_fraction = 1.0  # Table VI: 0.75 / 0.5 / 0.25 / 0.1
  c.eval.linear_epochs = 30  # paper: 30 epochs, encoder frozen
  c.eval.finetune_epochs = 70  # paper: then 70 epochs, whole model
  c.eval.linear_only = False  # linear probe only (no fine-tuning)
  c.eval.learning_rate = 1e-4  # paper: Adam, 1e-4
  c.eval.linear_learning_rate = 1e-4  # the linear-probe phase's (paper: same)
  # Train the linear layer on standardised features and fold the map into
  # its weights: the same linear model, better conditioned (not in the
  # paper). On with ``linear_only=1``; off before fine-tuning, where the
  # folded layer's large weights meet the shifted train-mode features (a
  # random encoder's first fine-tuning epoch: loss 677, BENCHMARKS.md,
  # "The calibrated benchmark", item 4).
  c.eval.linear_standardize = False
  # BatchNorm running statistics re-estimated per fold on its training
  # videos before the linear phase: "auto" (on for init_from="", the random
  # encoder, whose statistics are the initial 0 and 1), "on" or "off".
  c.eval.bn_reestimate = "auto"
  # Learning-rate schedule of both phases: "plateau" (the paper's
  # reduce-on-plateau on the training loss), "cosine" or "constant".
  c.eval.schedule = "plateau"
  c.eval.plateau_patience = 3  # paper: reduce on plateau, patience 3
  c.eval.plateau_factor = 0.1  # not in the paper (PyTorch's default)
  c.eval.plateau_rtol = 1e-4  # PyTorch's default threshold
  # Fine-tuning clips: the uniform sampler (the whole neutral-to-apex
  # sequence) with random crop and flip; colour is left alone. Test clips:
  # the uniform sampler, whole frame.
  c.eval.train_temporal_modes = "uniform"
  c.eval.train_crop = True
  c.eval.train_crop_area = (0.5, 1.0)
  c.eval.train_flip = True
  c.eval.export_embeddings = True
  # > 0: the test part's accuracy every k fine-tuning epochs, in the fold's
  # log (a learning curve to read, never used to steer training).
  c.eval.log_test_every = 0
  # The training budget: "epochs" (the paper's: linear_epochs and
  # finetune_epochs over the labelled videos, so fewer steps at fewer
  # labels) or "steps" (linear_steps and finetune_steps at every label
  # fraction, a subset smaller than the batch drawn with repeats; the
  # schedule follows the steps).
  c.eval.budget = "epochs"
  c.eval.linear_steps = 300
  c.eval.finetune_steps = 400
  # Label subsets: "stratified" (per class, Table VI) or "subjects" (whole
  # subjects, every video of each), eval.subset_draws of them per fold
  # below 100% labels, seeded by (subset_seed, fold, draw); subset_seed < 0:
  # config.seed and the fold, as the training seed.
  c.eval.subset = "stratified"
  c.eval.subset_draws = 1
  c.eval.subset_seed = -1
  # Training seeds, apart from the fold and subset seeds: one run per seed
  # and subset ("0,1,2"); "": one run seeded by config.seed and the fold.
  c.eval.train_seeds = ""
  # The fine-tuning head starts from the linear phase's layer ("linear",
  # the paper's order) or at zero ("zero").
  c.eval.head_init = "linear"
  # The linear layer's fine-tuning rate: eval.learning_rate times this.
  c.eval.head_lr_mult = 1.0
  # A labelled data set of other subjects (e.g. synthetic_expressions/
  # expressive_heldout), scored by every run's final model ("": none).
  c.eval.heldout_data = ""
  return c


def apply_finetune_variants(
  c: ml_collections.ConfigDict, arg: str | None
) -> ml_collections.ConfigDict:
  """``encoder=``, ``init=kinetics400``, ``labels=<percent>`` (Table VI),
  ``linear_only=1``."""
  variants = parse_arg(arg)
  known = ("encoder", "init", "labels", "linear_only")
  for k in variants:
    if k not in known:
      raise ValueError(f"unknown config variant {k!r}; known: {known}")
  if "labels" in variants:
    pct = float(variants["labels"])
    if not 0 < pct <= 100:
      raise ValueError(f"labels must be a percentage in (0, 100], got {pct}")
    c.eval.label_fraction = pct / 100
  if variants.get("linear_only", "0") not in ("0", "1"):
    raise ValueError("linear_only must be 0 or 1")
  c.eval.linear_only = variants.get("linear_only", "0") == "1"
  c.eval.linear_standardize = c.eval.linear_only
  rest = ",".join(
    f"{k}={variants[k]}" for k in ("encoder", "init") if k in variants
  )
  return apply_variants(c, rest)
