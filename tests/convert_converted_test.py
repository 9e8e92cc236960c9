"""Converted checkpoints on disk: a round trip, and the errors of
save_converted and load_converted. Needs neither torch nor torchvision:
the states are those of our own randomly initialised modules."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from stclr_jax import models
from stclr_jax.convert import converted as converted_lib


def random_converted(arch: str, num_classes: int | None = None):
  """A :class:`Converted` of our own modules' random states (numpy)."""
  rngs = nnx.Rngs(0)
  encoder = models.make_encoder(arch, rngs=rngs)
  classifier = None
  if num_classes:
    classifier = converted_lib.pure_state(
      models.LinearClassifier(
        converted_lib.NUM_FEATURES, num_classes, rngs=rngs
      )
    )
  return converted_lib.Converted(
    jax.tree.map(np.asarray, converted_lib.pure_state(encoder)),
    None if classifier is None else jax.tree.map(np.asarray, classifier),
    ("stem.1.num_batches_tracked",),
  )


def test_save_and_load_round_trip(tmp_path):
  converted = random_converted("mc3_18", num_classes=7)
  out = tmp_path / "mc3"
  meta = converted_lib.save_converted(converted, "mc3_18", out, source="x")
  assert json.loads((out / converted_lib.METADATA_FILE).read_text()) == meta
  assert meta["format"] == converted_lib.FORMAT and meta["num_classes"] == 7
  assert meta["ignored_keys"] == ["stem.1.num_batches_tracked"]
  assert meta["input"]["mean"] == list(converted_lib.KINETICS_MEAN)
  encoder, classifier, loaded = converted_lib.load_converted(out)
  assert loaded == meta
  for ours, module in (
    (converted.encoder, encoder),
    (converted.classifier, classifier),
  ):
    restored = converted_lib.pure_state(module)
    assert jax.tree.structure(ours) == jax.tree.structure(restored)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(restored)):
      np.testing.assert_array_equal(a, np.asarray(b))


def test_load_converted_errors_name_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
    converted_lib.load_converted(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
    converted_lib.load_converted(tmp_path / "empty")
  out = tmp_path / "mc3"
  converted_lib.save_converted(random_converted("mc3_18"), "mc3_18", out)
  meta = json.loads((out / "metadata.json").read_text())
  (out / "metadata.json").write_text(json.dumps({**meta, "arch": "r3d_18"}))
  with pytest.raises(ValueError, match=f"{out}.* does not match r3d_18"):
    converted_lib.load_converted(out)
  with pytest.raises(FileExistsError, match=str(out)):
    converted_lib.save_converted(random_converted("mc3_18"), "mc3_18", out)
