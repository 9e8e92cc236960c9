"""The pretext options (stclr_jax/pretext/options.py) and the batch schema
(stclr_jax/pretext/batch.py): one place resolves and validates the
options, and answers which keys and counters a run's batches have."""

import dataclasses
import itertools
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from _helpers_data import fake_videos

from configs import stclr_synthetic
from stclr_jax import train, workdir
from stclr_jax.data import input as input_lib
from stclr_jax.data import streams, views
from stclr_jax.pretext import batch as batch_lib
from stclr_jax.pretext import objectives, options


def _config(arg="tiny=1"):
  return stclr_synthetic.get_config(arg)


def _with(c, **fields):
  """``c`` with ``fields`` (dotted names under config.pretext) set in a
  fresh ConfigDict, which takes any type (as a config file could)."""
  d = c.to_dict()
  for path, value in fields.items():
    *parents, key = path.split("__")
    node = d["pretext"]
    for p in parents:
      node = node[p]
    node[key] = value
  return ml_collections.ConfigDict(d)


def test_the_config_section_is_the_options_defaults():
  """configlib builds config.pretext from options.section_defaults: every
  method's fields at its dataclass's defaults, all off."""
  c = _config()
  assert c.pretext.to_dict() == options.section_defaults()
  assert set(options.METHODS) <= set(c.pretext.keys())
  for name, cls in options.METHODS.items():
    on = c.copy_and_resolve_references()
    on.pretext[name].enabled = True
    if name == "clmex":
      assert options.Pretext.from_config(on).clmex == options.MultiView()
    else:
      assert getattr(options.Pretext.from_config(on), name) == cls()


def test_each_variant_turns_on_its_section():
  for names in itertools.combinations(options.METHODS, 2):
    arg = "tiny=1,pretext=" + "+".join(names)
    if tuple(sorted(names)) in {tuple(sorted(k)) for k in options.EXCLUSIVE}:
      with pytest.raises(ValueError, match="turn one off"):
        options.Pretext.from_config(_config(arg))
      continue
    assert options.Pretext.from_config(_config(arg)).enabled == names


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("timeaug.offsets", (0.5,), r"config\.pretext\.timeaug: .*equal length"),
    ("timeaug.weights", (0.0,) * 5, r"config\.pretext\.timeaug: .*sum to 0"),
    ("hardneg.gap", -1.0, r"config\.pretext\.hardneg: gap must be > 0"),
    (
      "samesubject.videos_per_subject",
      1,
      r"config\.pretext\.samesubject: videos_per_subject must be >= 2",
    ),
    (
      "samesubject.videos_per_subject",
      2.5,
      r"config\.pretext\.samesubject\.videos_per_subject must be a whole",
    ),
    ("maskfn.descriptor", "sift", r"config\.pretext\.maskfn: descriptor"),
    ("maskfn.weight", 1.5, r"config\.pretext\.maskfn: weight must be in"),
    ("maskfn.crop_size", 2, r"config\.pretext\.maskfn: crop_size"),
    (
      "faceswap.probability",
      1.2,
      r"config\.pretext\.faceswap: probability must be in",
    ),
    ("faceswap.smoothing", -1, r"config\.pretext\.faceswap: smoothing"),
    ("faceswap.colour", 1, r"config\.pretext\.faceswap\.colour must be True"),
  ],
)
def test_bad_fields_are_errors_naming_the_field(field, value, match):
  name, key = field.split(".")
  on = {f"{name}__enabled": True, f"{name}__{key}": value}
  with pytest.raises(ValueError, match=match):
    options.Pretext.from_config(_with(_config(), **on))
  # Off, its fields are not read.
  off = {**on, f"{name}__enabled": False}
  assert options.Pretext.from_config(_with(_config(), **off)) == (
    options.Pretext()
  )


def test_bad_switches_and_fps_are_errors_naming_the_field():
  c = _config()
  cases = [
    ({"hardneg__enabled": 1}, r"pretext\.hardneg\.enabled must be True"),
    ({"default_fps": 0.0}, r"pretext\.default_fps must be > 0"),
    ({"default_fps": "fast"}, r"pretext\.default_fps must be a number"),
    ({"timeaug__offset": (1.0,)}, r"timeaug: unknown fields \['offset'"),
    ({"svfap": True}, r"unknown fields \['svfap'\]"),
    ({"faceswap": True}, r"pretext\.faceswap must be a section"),
    ({"clmex": True}, r"pretext\.clmex must be a section"),
  ]
  for fields, match in cases:
    with pytest.raises(ValueError, match=match):
      options.Pretext.from_config(_with(c, **fields))


def test_the_flat_fields_of_older_configs_are_an_error_naming_the_new():
  c = _config().to_dict()
  c["pretext"] = {"temporal_shift": True, "maskfn": False, "default_fps": 25}
  with pytest.raises(
    ValueError,
    match=r"maskfn is now pretext\.maskfn\.enabled, temporal_shift is now "
    r"pretext\.timeaug\.enabled",
  ):
    options.Pretext.from_config(ml_collections.ConfigDict(c))


def test_an_older_workdirs_config_is_compared_in_todays_names(tmp_path):
  """A run from before the sections recorded ``pretext.temporal_shift``;
  relaunched with TimeAug off, the resume check names the new field."""
  c = _config()
  old = json.loads(c.to_json_best_effort())
  flat = {
    "temporal_shift": True,
    "shift_offsets": [0.04],
    "shift_weights": [1.0],
    "hard_negatives": False,
    "hard_negative_gap": 2.88,
    "same_subject_negatives": False,
    "videos_per_subject": 2,
    "default_fps": 25.0,
    "maskfn": False,
    "maskfn_weight": 0.8,
    "maskfn_descriptor": "hog",
    "maskfn_crop_size": 64,
    "multi_view_positives": False,
  }
  old["pretext"] = flat
  assert set(flat) - {"default_fps"} == set(options.FLAT_FIELDS)
  migrated = options.migrate_flat(old)["pretext"]
  assert migrated["timeaug"] == {
    "enabled": True,
    "offsets": [0.04],
    "weights": [1.0],
  }
  assert not migrated["maskfn"]["enabled"] and not migrated["clmex"]["enabled"]
  (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(old))
  with pytest.raises(workdir.WorkdirError, match=r"pretext\.timeaug\.enabled"):
    workdir.check_resume_config(c, str(tmp_path))
  c.pretext.timeaug.enabled = True
  c.pretext.timeaug.offsets = (0.04,)
  c.pretext.timeaug.weights = (1.0,)
  workdir.check_resume_config(c, str(tmp_path))  # the same run: resumes


def _streamed_keys(pretext, placement):
  ds, _ = fake_videos()
  if pretext.keypoints or pretext.whole_groups:
    ds = ds.map(
      lambda e: {
        **e,
        "keypoints": tf.zeros([tf.shape(e["video"])[0], 5, 2]) + 8.0,
        "group_id": e["subject_id"] // 2,
      }
    )
  spec = views.ViewSpec(
    clip_len=4, size=16, pretext=pretext, placement=placement
  )
  stream = streams.pretrain_dataset(ds, 10, batch_size=2, view=spec, seed=0)
  return spec.schema, set(stream.element_spec)


_COMBINATIONS = [
  options.Pretext(),
  options.Pretext(timeaug=options.TemporalShift()),
  options.Pretext(
    hardneg=options.HardNegatives(), maskfn=options.MaskFN(crop_size=8)
  ),
  options.Pretext(
    timeaug=options.TemporalShift(),
    hardneg=options.HardNegatives(),
    clmex=options.MultiView(),
  ),
  options.Pretext(hardneg=options.HardNegatives(), faceswap=options.FaceSwap()),
]


@pytest.mark.parametrize("placement", ["host", "device"])
@pytest.mark.parametrize("i", range(len(_COMBINATIONS)))
def test_the_stream_makes_exactly_the_schemas_keys(i, placement):
  pretext = _COMBINATIONS[i]
  schema, keys = _streamed_keys(pretext, placement)
  assert keys == set(schema.keys)
  assert schema.hard == (pretext.hardneg is not None)
  assert (batch_lib.HARD_A in keys) == schema.hard
  assert (batch_lib.GROUP in keys) == pretext.whole_groups
  assert (batch_lib.FACE_SWAP in keys) == (pretext.faceswap is not None)
  assert batch_lib.is_shipped(keys) == (placement == "device")
  assert batch_lib.BatchSchema.of(keys) == schema


def test_a_batch_off_its_schema_is_an_error_naming_the_keys():
  schema = options.Pretext(hardneg=options.HardNegatives()).schema()
  good = {k: np.zeros(2) for k in schema.keys}
  assert set(schema.model_inputs(good)) == set(schema.model_keys)
  assert batch_lib.SUBJECT not in schema.model_keys
  bad = {k: v for k, v in good.items() if k != batch_lib.HARD_B}
  bad["parts_a"] = np.zeros(2)
  with pytest.raises(
    ValueError, match=r"missing \['hard_b'\], unexpected \['parts_a'\]"
  ):
    schema.model_inputs(bad)


@pytest.mark.parametrize("arg", ["", "pretext=maskfn", "pretext=clmex"])
def test_every_objective_reads_only_keys_its_batches_have(arg):
  c = _config("tiny=1" + ("," + arg if arg else ""))
  obj = train.objective(c)
  schema = options.Pretext.from_config(c).schema()
  assert set(obj.batch_keys) <= set(schema.model_keys)


def test_an_objective_reading_a_key_the_batch_lacks_is_caught(monkeypatch):
  @dataclasses.dataclass(frozen=True)
  class NeedsGroups(objectives.NTXent):
    batch_keys = (*batch_lib.PAIR, batch_lib.GROUP)

  monkeypatch.setattr(
    objectives, "from_options", lambda p, t: NeedsGroups(float(t))
  )
  with pytest.raises(ValueError, match=r"reads \['group'\]"):
    train.objective(_config())


def test_counters_are_the_schemas():
  both = options.Pretext(
    timeaug=options.TemporalShift(), hardneg=options.HardNegatives()
  )
  assert both.counters() == (
    "pretext/shift_clamped",
    "pretext/gap_policy_gap",
    "pretext/gap_policy_halves",
    "pretext/gap_policy_none",
  )
  assert options.Pretext().counters() == ()
  counts = batch_lib.Counts()
  counts.add(
    {
      batch_lib.HARD_A: np.zeros(2),
      batch_lib.SHIFT_CLAMPED: np.array([1, 2]),
      batch_lib.GAP_POLICY: np.array([0, 1]),
    }
  )
  assert tuple(counts.read()) == both.counters()


def test_the_view_spec_of_a_config_carries_its_resolved_options():
  c = _config("tiny=1,pretext=timeaug+hardneg")
  c.pretext.hardneg.gap = 1.5
  spec = input_lib.view_spec(c)
  assert spec.pretext == options.Pretext(
    timeaug=options.TemporalShift(), hardneg=options.HardNegatives(gap=1.5)
  )
