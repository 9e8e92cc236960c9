"""Shared pieces of the ml-collections configs in ``configs/``.

Every config file defines ``get_config(arg=None)``; ``arg`` is the text after
the colon in ``--config=configs/<file>.py:<arg>``, a comma-separated list of
``key=value`` variants, e.g. ``encoder=r3d_18,aug=no_temporal,epochs=100``.
``batch_size`` is always the *global* batch (all devices of all hosts).
"""

from __future__ import annotations

import ml_collections

from stclr_jax.convert.kinetics import KINETICS_MEAN, KINETICS_STD
from stclr_jax.pretext import options as pretext_options

# Table IV ablations: which augmentation a variant switches off.
AUG_VARIANTS = ("all", "no_temporal", "no_crop", "no_color", "no_flip")
# ``pretext=`` variants (joined with "+"): the config.pretext section whose
# ``enabled`` each turns on.
PRETEXT_VARIANTS = tuple(pretext_options.METHODS)
# models.ENCODER_NAMES (held equal by a test; importing models pulls in JAX).
ENCODERS = (
  "r2plus1d_18",
  "r3d_18",
  "mc3_18",
  "tpsbt_base",
  "vit_small",
  "vit_base",
  "tpsbt_cpu",
  "vit_cpu",
  "tpsbt_tiny",
  "vit_tiny",
)


def _run_fields(c: ml_collections.ConfigDict, batch_size: int) -> None:
  c.seed = 0
  c.batch_size = batch_size  # global; not in the paper (see README)


def model_section() -> ml_collections.ConfigDict:
  """The encoder and the projection head (pretraining and evaluation)."""
  m = ml_collections.ConfigDict()
  m.encoder = "r2plus1d_18"
  m.width = 1.0
  m.dtype = "float32"  # compute dtype; params float32 (float64: x64)
  m.bn_per_device = False  # False: global (synchronised) BatchNorm
  m.proj_hidden = 0  # 0: the encoder's feature width
  m.proj_dim = 128
  # Last BatchNorm scale of each residual block at zero (not in the paper).
  m.zero_init_residual = False
  return m


def data_section() -> ml_collections.ConfigDict:
  """Which videos, at what size (pretraining and evaluation)."""
  d = ml_collections.ConfigDict()
  d.name = "oulu_casia/vis_strong"
  d.data_dir = ""  # TFDS data_dir ("" = TFDS default)
  d.manual_dir = ""  # Oulu-CASIA's folder
  d.csv_path = ""  # for name="video_folder"
  d.split = "train"
  d.clip_len = 16
  d.size = 224
  d.num_shards = 0  # logical input shards; 0 = processes
  d.cache = True
  d.cache_frame_size = 0  # 0: cache frames at stored size
  d.mean = (0.0, 0.0, 0.0)  # input normalisation, on [0, 1] frames
  d.std = (1.0, 1.0, 1.0)
  return d


def aug_section() -> ml_collections.ConfigDict:
  """The pretraining views' temporal and spatial augmentation."""
  a = ml_collections.ConfigDict()
  a.temporal_modes = "random,uniform,sequential"  # "" = no temporal aug
  a.crop = True
  a.crop_area = (0.08, 1.0)
  a.crop_aspect = (3 / 4, 4 / 3)
  a.flip = True
  a.color = True
  a.color_strength = 1.0
  a.color_prob = 0.8
  a.grayscale_prob = 0.2
  # Where the pretraining views' crop, flip and colour run: "host"
  # (tf.data), "device" (inside the jitted step, from the host's draws:
  # the host only decodes, samples and ships uint8 frames), or "auto":
  # "device" on GPU and TPU, "host" on CPU, where the "device" is the same
  # cores (BENCHMARKS.md, "Augmentation on the device").
  a.placement = "auto"
  a.ship_size = (0, 0)  # device path: (H, W) of shipped frames; 0: auto
  return a


def loss_section() -> ml_collections.ConfigDict:
  loss = ml_collections.ConfigDict()
  loss.temperature = 0.1  # not in the paper (see README)
  return loss


def pretext_section() -> ml_collections.ConfigDict:
  """Pretext options, all off: the paper's ST-CLR. One sub-section per
  method (``timeaug``, ``hardneg``, ``samesubject``, ``maskfn``,
  ``clmex``), each with ``enabled`` and its fields at the method's
  published values, and ``default_fps``; defined and validated in
  :mod:`stclr_jax.pretext.options` (docs/pretext_options.md)."""
  return ml_collections.ConfigDict(pretext_options.section_defaults())


def optim_section() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "sgd"  # "sgd" | "lars" | "adam"
  o.learning_rate = 1e-3  # paper: 1e-3
  o.momentum = 0.9  # paper: 0.9
  o.weight_decay = 1e-4  # paper: 1e-4
  o.schedule = "constant"  # "constant" | "cosine"
  o.warmup_epochs = 0.0
  o.grad_clip_norm = 0.0  # 0: no clipping
  return o


def base_config() -> ml_collections.ConfigDict:
  """A pretraining config (``--mode=train``), at the paper's values where
  the paper gives them: run fields, then the model, data, aug, loss,
  pretext and optim sections."""
  c = ml_collections.ConfigDict()
  _run_fields(c, batch_size=32)
  c.num_epochs = 1000  # paper: 1000 SSL epochs
  c.num_steps = -1  # > 0 overrides num_epochs
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.profile = False
  c.init_from = ""  # converted (Kinetics-400) or pretraining workdir
  c.model = model_section()
  c.data = data_section()
  c.aug = aug_section()
  c.loss = loss_section()
  c.pretext = pretext_section()
  c.optim = optim_section()
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


def _typed(key: str, text: str, default):
  if isinstance(default, bool):
    if text in ("1", "true", "True"):
      return True
    if text in ("0", "false", "False"):
      return False
    raise ValueError(f"config argument {key}={text!r}: must be 0 or 1")
  try:
    return type(default)(text)
  except ValueError:
    kind = type(default).__name__
    raise ValueError(
      f"config argument {key}={text!r}: not a {kind} value"
    ) from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """The text after the colon of ``--config=<file>.py:<arg>``, typed: each
  ``key=value`` of ``arg`` must be a keyword of ``defaults`` and takes its
  type (bool: 0/1, true/false); keys not given keep their default.

  ``parse_arg("labels=10", labels=100.0, tiny=False)`` ->
  ``ConfigDict(labels=10.0, tiny=False)``; errors name the bad part.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      raise ValueError(f"config argument {part!r} is not key=value")
    k, v = (x.strip() for x in part.split("=", 1))
    if k not in defaults:
      raise ValueError(
        f"unknown config variant {k!r}; known: {tuple(defaults)}"
      )
    out[k] = _typed(k, v, defaults[k])
  return out


# The variants every pretraining config takes (``apply_variants``), with
# their defaults: the paper's ST-CLR. ``epochs=0`` keeps the config's own.
PRETRAIN_ARGS = dict(
  encoder="r2plus1d_18", aug="all", epochs=0, init="random", pretext="none"
)
# The variants every evaluation config takes (``apply_finetune_variants``).
FINETUNE_ARGS = dict(
  encoder="r2plus1d_18", init="random", labels=100.0, linear_only=False
)


def _apply_encoder_and_init(c, args) -> None:
  if args.encoder not in ENCODERS:
    raise ValueError(f"encoder must be one of {ENCODERS}")
  c.model.encoder = args.encoder
  if args.init == "kinetics400":
    # Weights from `python -m stclr_jax.convert.torchvision` (pass the
    # directory as --config.init_from); they expect Kinetics statistics.
    c.data.mean, c.data.std = tuple(KINETICS_MEAN), tuple(KINETICS_STD)
  elif args.init != "random":
    raise ValueError(f"init must be random or kinetics400, got {args.init!r}")


def apply_variants(
  c: ml_collections.ConfigDict, args: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """Applies the ablation variants of :data:`PRETRAIN_ARGS` (parsed by
  :func:`parse_arg`): ``encoder=``, ``aug=`` (Table IV), ``epochs=``,
  ``init=`` and ``pretext=`` (e.g. ``pretext=timeaug+hardneg``; options
  of :data:`PRETEXT_VARIANTS`, or ``none``)."""
  _apply_encoder_and_init(c, args)
  if args.aug not in AUG_VARIANTS:
    raise ValueError(f"aug must be one of {AUG_VARIANTS}, got {args.aug!r}")
  if args.aug == "no_temporal":
    c.aug.temporal_modes = ""
  elif args.aug != "all":
    setattr(c.aug, args.aug[len("no_") :], False)
  if args.epochs > 0:
    c.num_epochs = args.epochs
  for name in filter(None, args.pretext.split("+")):
    if name == "none":
      continue
    if name not in PRETEXT_VARIANTS:
      raise ValueError(
        f"pretext must be none or options of {PRETEXT_VARIANTS} "
        f"joined with '+', got {args.pretext!r}"
      )
    c.pretext[name].enabled = True
  return c


def finetune_config() -> ml_collections.ConfigDict:
  """An evaluation config (``--mode=evaluate``): the paper's fine-tuning
  protocol (Sec. III-B, IV-A) under subject-independent k-fold
  cross-validation. Run fields, the model and data sections (as the
  pretraining run's), the initialisation and the eval section."""
  c = ml_collections.ConfigDict()
  _run_fields(c, batch_size=16)
  # A pretraining workdir (or its checkpoints/ folder), or a converted
  # Kinetics-400 checkpoint; "" = random initialisation (from scratch).
  c.init_from = ""
  c.model = model_section()
  c.data = data_section()
  c.init_step = -1  # pretraining step to restore; -1 = latest
  c.eval = eval_section()
  return c


def eval_section() -> ml_collections.ConfigDict:
  """The evaluation protocol: folds, label subsets, the linear and
  fine-tuning phases, and the held-out population."""
  e = ml_collections.ConfigDict()
  e.num_folds = 10  # paper: 10-fold cross-validation
  e.fold_by = "subject"  # "subject" (independent) | "video"
  e.run_folds = ""  # e.g. "0,1,2"; "" = every fold
  e.label_fraction = 1.0  # Table VI: 0.75 / 0.5 / 0.25 / 0.1
  e.linear_epochs = 30  # paper: 30 epochs, encoder frozen
  e.finetune_epochs = 70  # paper: then 70 epochs, whole model
  e.linear_only = False  # linear probe only (no fine-tuning)
  e.learning_rate = 1e-4  # paper: Adam, 1e-4
  e.linear_learning_rate = 1e-4  # the linear-probe phase's (paper: same)
  # Train the linear layer on standardised features and fold the map into
  # its weights: the same linear model, better conditioned (not in the
  # paper). On with ``linear_only=1``; off before fine-tuning, where the
  # folded layer's large weights meet the shifted train-mode features (a
  # random encoder's first fine-tuning epoch: loss 677, BENCHMARKS.md,
  # "The calibrated benchmark", item 4).
  e.linear_standardize = False
  # BatchNorm running statistics re-estimated per fold on its training
  # videos before the linear phase: "auto" (on for init_from="", the random
  # encoder, whose statistics are the initial 0 and 1), "on" or "off".
  e.bn_reestimate = "auto"
  # Learning-rate schedule of both phases: "plateau" (the paper's
  # reduce-on-plateau on the training loss), "cosine" or "constant".
  e.schedule = "plateau"
  e.plateau_patience = 3  # paper: reduce on plateau, patience 3
  e.plateau_factor = 0.1  # not in the paper (PyTorch's default)
  e.plateau_rtol = 1e-4  # PyTorch's default threshold
  # Fine-tuning clips: the uniform sampler (the whole neutral-to-apex
  # sequence) with random crop and flip; colour is left alone. Test clips:
  # the uniform sampler, whole frame.
  e.train_temporal_modes = "uniform"
  e.train_crop = True
  e.train_crop_area = (0.5, 1.0)
  e.train_flip = True
  e.export_embeddings = True
  # > 0: the test part's accuracy every k fine-tuning epochs, in the fold's
  # log (a learning curve to read, never used to steer training).
  e.log_test_every = 0
  # The training budget: "epochs" (the paper's: linear_epochs and
  # finetune_epochs over the labelled videos, so fewer steps at fewer
  # labels) or "steps" (linear_steps and finetune_steps at every label
  # fraction, a subset smaller than the batch drawn with repeats; the
  # schedule follows the steps).
  e.budget = "epochs"
  e.linear_steps = 300
  e.finetune_steps = 400
  # Label subsets: "stratified" (per class, Table VI) or "subjects" (whole
  # subjects, every video of each), eval.subset_draws of them per fold
  # below 100% labels, seeded by (subset_seed, fold, draw); subset_seed < 0:
  # config.seed and the fold, as the training seed.
  e.subset = "stratified"
  e.subset_draws = 1
  e.subset_seed = -1
  # Training seeds, apart from the fold and subset seeds: one run per seed
  # and subset ("0,1,2"); "": one run seeded by config.seed and the fold.
  e.train_seeds = ""
  # The fine-tuning head starts from the linear phase's layer ("linear",
  # the paper's order) or at zero ("zero").
  e.head_init = "linear"
  # The linear layer's fine-tuning rate: eval.learning_rate times this.
  e.head_lr_mult = 1.0
  # A labelled data set of other subjects (e.g. synthetic_expressions/
  # expressive_heldout), scored by every run's final model ("": none).
  e.heldout_data = ""
  e.transformer = transformer_recipe()
  return e


def transformer_recipe() -> ml_collections.ConfigDict:
  """Fine-tuning a video transformer (``model.encoder`` a TPSBT or ViT):
  SVFAP's ``run_class_finetuning.py`` defaults. It replaces the phase's
  optimiser (Adam), schedule and loss for that family only; the R(2+1)D
  path never reads it. Budget, steps and subsets stay ``eval``'s."""
  t = ml_collections.ConfigDict()
  # AdamW; the rate is base_learning_rate x batch / 256 (SVFAP's rule).
  t.base_learning_rate = 1e-3
  t.betas = (0.9, 0.999)
  t.weight_decay = 0.05  # not on 1-D parameters (biases, LayerNorms)
  # Layer-wise rate decay: the tube embedding has id 0, block i id i + 1,
  # the rest (temporal pyramid, bottleneck, fc_norm, head) the last id;
  # id j is scaled by layer_decay^(blocks + 1 - j).
  t.layer_decay = 0.75
  # Linear warm-up from warmup_lr over this fraction of the steps (SVFAP:
  # 5 of 100 epochs), then cosine to min_lr.
  t.warmup_fraction = 0.05
  t.warmup_lr = 1e-6
  t.min_lr = 1e-6
  t.drop_path = 0.1  # the last block's stochastic depth
  t.label_smoothing = 0.1
  # Mixup (Beta(mixup, mixup)) or, with probability switch_prob, CutMix
  # (one box for every frame of a clip; Beta(cutmix, cutmix)), on the
  # device, applied to a batch with probability mix_prob (timm's Mixup).
  t.mixup = 0.8
  t.cutmix = 1.0
  t.mix_prob = 1.0
  t.switch_prob = 0.5
  # Test time: this many temporal windows per video, softmax averaged.
  t.test_windows = 2
  return t


def apply_finetune_variants(
  c: ml_collections.ConfigDict, args: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """Applies the variants of :data:`FINETUNE_ARGS` (parsed by
  :func:`parse_arg`): ``encoder=``, ``init=kinetics400``,
  ``labels=<percent>`` (Table VI), ``linear_only=1``."""
  if not 0 < args.labels <= 100:
    raise ValueError(
      f"labels must be a percentage in (0, 100], got {args.labels}"
    )
  c.eval.label_fraction = args.labels / 100
  c.eval.linear_only = args.linear_only
  c.eval.linear_standardize = args.linear_only
  _apply_encoder_and_init(c, args)
  return c
