"""The data stream record (stclr_jax/stream_record.py): the data shards a run
keeps when it resumes on another number of processes."""

import json
import os

import ml_collections
import pytest

from stclr_jax import stream_record


def _data_config(num_shards=0, seed=0):
  return ml_collections.ConfigDict(
    {"seed": seed, "data": {"num_shards": num_shards}}
  )


def test_a_resumed_run_keeps_its_data_shards_or_says_why_not(tmp_path):
  work = str(tmp_path)
  # Fresh: the config's count, or one shard per process.
  assert stream_record.data_shards(_data_config(), work, False, 4) == 4
  assert stream_record.data_shards(_data_config(8), work, False, 2) == 8
  # Resuming without a record (a run from before the record): as fresh.
  assert stream_record.data_shards(_data_config(), work, True, 2) == 2
  with open(os.path.join(work, stream_record.STREAM_FILE), "w") as f:
    json.dump({"num_shards": 4, "seed": 0}, f)
  # Resumed on 1, 2 or 4 processes: the run's 4 shards, the same stream.
  for processes in (1, 2, 4):
    assert stream_record.data_shards(_data_config(), work, True, processes) == 4
  assert stream_record.data_shards(_data_config(4), work, True, 2) == 4
  with pytest.raises(ValueError, match=r"4 data shards .* 3 processes"):
    stream_record.data_shards(_data_config(), work, True, 3)
  with pytest.raises(
    ValueError,
    match=r"num_shards=2 would change .* "
    r"--config.data.num_shards=4",
  ):
    stream_record.data_shards(_data_config(2), work, True, 2)
  with pytest.raises(ValueError, match=r"seed 0 .* --config.seed=1 would"):
    stream_record.data_shards(_data_config(seed=1), work, True, 2)
  # Written once, atomically; a resumed run does not rewrite it.
  stream_record.record_stream(work, 8, 5)
  assert (
    json.load(open(os.path.join(work, stream_record.STREAM_FILE)))["seed"] == 0
  )
  # The record only counts for a run that resumes.
  assert stream_record.data_shards(_data_config(), work, False, 2) == 2
