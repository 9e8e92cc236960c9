"""A workdir damaged after it was written (stclr_jax/checkpoints.py,
stclr_jax/workdir.py, stclr_jax/stream_record.py, stclr_jax/train.py): a
checkpoint whose data files are truncated, zeroed or missing is moved aside
and the one before it restored, ending equal to an uninterrupted run; every
step damaged starts afresh; a record cut short or a config that no longer
fits the run stops the relaunch with a message naming the file or the
fields, before any restore; two processes agree on the step they resume
from.

One tiny run (4 steps, a checkpoint at each) is the uninterrupted run and
the source of every damaged workdir."""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys

import _helpers_runs as runs
import jax
import numpy as np
import pytest
from etils import epath
from jax.experimental.compilation_cache import compilation_cache

from configs import stclr_synthetic
from stclr_jax import train
from stclr_jax import workdir as workdir_lib

_STEPS = 4
# The run's fields that the relaunches repeat (data.num_shards=2: the
# two-process relaunch can split the run's stream).
_RUN = {
  "num_steps": _STEPS,
  "checkpoint_every_steps": 1,
  "keep_checkpoints": 10,
  "data.num_shards": 2,
}


def _set(config, field, value):
  *parents, name = field.split(".")
  for p in parents:
    config = config[p]
  config[name] = value


def _config(tfds_dir, **fields):
  c = stclr_synthetic.get_config("tiny=1")
  c.data.data_dir = str(tfds_dir)
  for k, v in {**_RUN, **fields}.items():
    _set(c, k, v)
  return c


def _pretrain(config, workdir):
  return train.pretrain(config, str(workdir), devices=jax.devices()[:1])


@pytest.fixture(scope="module", autouse=True)
def xla_cache(tmp_path_factory):
  """The relaunches compile the run's own step again: a persistent
  compilation cache of this module's serves them from the first compile
  (as it would a relaunch on a cluster). Put back as it was afterwards."""
  names = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
  )
  saved = {n: getattr(jax.config, n) for n in names}
  compilation_cache.reset_cache()
  jax.config.update(names[0], str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update(names[1], 0)
  yield
  compilation_cache.reset_cache()
  for n, v in saved.items():
    jax.config.update(n, v)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def run(tfds_dir, tmp_path_factory):
  """The uninterrupted run: its workdir, with checkpoints 1 to 4."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  _pretrain(_config(tfds_dir), workdir)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3", "4"]
  return workdir


def _copy(run, tmp_path):
  return shutil.copytree(run, tmp_path / "w")


def _data_files(workdir, step):
  """A step's OCDBT data files, the largest first."""
  d = workdir / "checkpoints" / str(step) / "default" / "ocdbt.process_0" / "d"
  return sorted(d.iterdir(), key=lambda f: -f.stat().st_size)


def _truncate(path):
  os.truncate(path, 100)


def _zero(path):
  path.write_bytes(bytes(path.stat().st_size))


def _damage(how, workdir, step):
  """Damages ``step``'s largest data file; returns its path after the
  damaged step is moved aside, and its size."""
  path = _data_files(workdir, step)[0]
  if how == "missing":
    path.unlink()
  else:
    {"truncated": _truncate, "zeroed": _zero}[how](path)
  rel = path.relative_to(workdir / "checkpoints" / str(step))
  size = None if how == "missing" else path.stat().st_size
  return workdir / "checkpoints" / f"corrupt-{step}" / rel, size


def _assert_equal_checkpoints(a, b, step):
  pa, pb = runs.checkpoint(a, step), runs.checkpoint(b, step)
  assert int(pa["step"]) == int(pb["step"]) == step
  leaves_a, leaves_b = jax.tree.leaves(pa), jax.tree.leaves(pb)
  assert len(leaves_a) == len(leaves_b) > 100
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _logged(caplog, text):
  return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("how", ["truncated", "zeroed", "missing"])
def test_a_damaged_latest_step_is_moved_aside_and_the_previous_restored(
  run, tfds_dir, tmp_path, caplog, how
):
  work = _copy(run, tmp_path)
  kept, size = _damage(how, work, _STEPS)
  caplog.set_level(logging.INFO)
  # Keep one checkpoint from now on: the manager's clean-up leaves the
  # damaged step alone.
  _pretrain(_config(tfds_dir, keep_checkpoints=1), work)
  (line,) = _logged(caplog, "does not restore")
  w = re.escape(str(work))
  assert re.match(
    rf"Checkpoint step {_STEPS} does not restore: ValueError: \w+: Error "
    rf"reading .* Moved it to {w}/checkpoints/corrupt-{_STEPS} \(kept, "
    rf"not deleted\); trying step {_STEPS - 1}\.$",
    line.getMessage(),
  ), line.getMessage()
  assert _logged(caplog, f"Resumed from checkpoint step {_STEPS - 1}")
  assert not _logged(caplog, "starting afresh")
  assert not [r for r in caplog.records if r.name == "asyncio"]
  assert sorted(os.listdir(work / "checkpoints")) == [
    str(_STEPS),
    f"corrupt-{_STEPS}",
  ]
  if how == "missing":
    assert not kept.exists() and kept.parent.is_dir()
  else:  # the damaged file, as it was
    assert kept.stat().st_size == size
  _assert_equal_checkpoints(run, work, _STEPS)


def test_from_the_command_line_one_line_and_nothing_at_exit(
  run, tfds_dir, tmp_path
):
  """The same through ``python -m stclr_jax.main`` (relaunched to end at
  the step it resumes from): one warning, and nothing after the run's
  last line (no reads of the failed restore left to report a closed event
  loop at exit)."""
  work = _copy(run, tmp_path)
  kept, size = _damage("truncated", work, _STEPS)
  r = subprocess.run(
    runs.main_cmd(
      work, {**_RUN, "data.data_dir": tfds_dir, "num_steps": _STEPS - 1}
    ),
    env=runs.env(1),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stderr.count("does not restore") == 1, r.stderr[-3000:]
  assert re.search(
    rf"Checkpoint step {_STEPS} does not restore: ValueError: OUT_OF_RANGE: "
    r"Error reading .* is not valid for value of size 100\. Moved it to ",
    r.stderr,
  )
  assert f"Resumed from checkpoint step {_STEPS - 1}" in r.stderr
  for noise in (
    "Traceback",
    "Event loop is closed",
    "Exception ignored",
    "exception was never retrieved",
    "Encountered error",
  ):
    assert noise not in r.stderr, r.stderr[-3000:]
  assert r.stdout.startswith("final step"), r.stdout
  assert kept.stat().st_size == size


def test_a_damaged_step_that_cannot_be_moved_aside_is_an_error(
  run, tfds_dir, tmp_path, monkeypatch
):
  work = _copy(run, tmp_path)
  _damage("zeroed", work, _STEPS)

  def refused(self, target):
    raise PermissionError(13, "Permission denied", str(self))

  monkeypatch.setattr(type(epath.Path(work)), "rename", refused)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _pretrain(_config(tfds_dir), work)
  w = re.escape(str(work))
  assert re.fullmatch(
    rf"Checkpoint step {_STEPS} in {w}/checkpoints does not restore "
    r"\(ValueError: .*\), and it could not be moved aside to "
    rf"{w}/checkpoints/corrupt-{_STEPS} \(PermissionError: .*\)\. Move "
    rf"it out of {w}/checkpoints yourself, then relaunch to resume from "
    r"the step before it\.",
    str(e.value),
  ), str(e.value)
  assert sorted(os.listdir(work / "checkpoints")) == ["1", "2", "3", "4"]


def test_every_step_damaged_starts_afresh_and_says_so_once(
  run, tfds_dir, tmp_path, caplog
):
  work = _copy(run, tmp_path)
  for step, how in zip(range(1, _STEPS + 1), ["truncated", "zeroed"] * 2):
    _damage(how, work, step)
  caplog.set_level(logging.INFO)
  _pretrain(_config(tfds_dir), work)
  lines = [r.getMessage() for r in _logged(caplog, "does not restore")]
  assert [int(m.split()[2]) for m in lines] == [4, 3, 2, 1]
  assert lines[-1].endswith("none left.")
  (fresh,) = _logged(caplog, "starting afresh")
  assert fresh.getMessage() == (
    f"No checkpoint in {work}/checkpoints restores (steps 4, 3, 2, 1 moved "
    "aside to corrupt-<step>); starting afresh from step 0."
  )
  assert not _logged(caplog, "Resumed from")
  assert sorted(os.listdir(work / "checkpoints")) == [
    "1",
    "2",
    "3",
    "4",
    "corrupt-1",
    "corrupt-2",
    "corrupt-3",
    "corrupt-4",
  ]
  # The fresh start took the uninterrupted run's path from step 0.
  _assert_equal_checkpoints(run, work, _STEPS)


@pytest.fixture
def nothing_built(monkeypatch):
  """The relaunch must stop before it builds (let alone restores) a
  state."""

  def built(*a, **k):
    raise AssertionError("a state was built")

  monkeypatch.setattr(train, "create_state", built)


@pytest.mark.parametrize(
  "record, holds",
  [
    ("config.json", "the config the run was started with"),
    ("data_stream.json", "the run's number of data shards and seed"),
  ],
)
@pytest.mark.parametrize("cut", [9, 0])
def test_a_record_cut_short_is_an_error_naming_the_file(
  run, tfds_dir, tmp_path, nothing_built, record, holds, cut
):
  work = _copy(run, tmp_path)
  path = work / record
  path.write_bytes(path.read_bytes()[:cut])
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _pretrain(_config(tfds_dir), work)
  message = str(e.value)
  assert message.startswith(f"{path} cannot be read (JSONDecodeError: ")
  assert f"It holds {holds}" in message
  assert message.endswith(
    "Restore it from a copy of the workdir, or start a new --workdir."
  )
  assert len(path.read_bytes()) == cut  # left as it was
  assert sorted(os.listdir(work / "checkpoints")) == ["1", "2", "3", "4"]


def test_a_record_that_parses_but_holds_nonsense_is_an_error(
  run, tfds_dir, tmp_path, nothing_built
):
  work = _copy(run, tmp_path)
  (work / "data_stream.json").write_text('{"num_shards": "2", "seed": 0}')
  with pytest.raises(
    workdir_lib.WorkdirError, match=r"num_shards is '2', not a positive"
  ):
    _pretrain(_config(tfds_dir), work)
  (work / "config.json").write_text("[1, 2]")
  with pytest.raises(
    workdir_lib.WorkdirError, match=r"config.json cannot be read \(not a JSON"
  ):
    _pretrain(_config(tfds_dir), work)


# A field that fixes the saved state's shapes or meaning, and another value.
_GUARDED = [
  ("model.encoder", "r3d_18"),
  ("model.width", 0.25),
  ("model.dtype", "bfloat16"),
  ("model.bn_per_device", True),
  ("model.proj_hidden", 32),
  ("model.proj_dim", 64),
  ("optim.name", "sgd"),
  ("optim.learning_rate", 0.01),
  ("optim.schedule", "cosine"),
  ("batch_size", 16),
  ("seed", 1),
  ("data.name", "synthetic_expressions/tiny"),
  ("data.clip_len", 8),
  ("data.size", 48),
  ("data.mean", (0.5, 0.5, 0.5)),
  ("aug.color_strength", 1.0),
  ("loss.temperature", 0.2),
  ("pretext.timeaug.enabled", True),
]


@pytest.fixture(scope="module")
def guarded_workdir(run, tmp_path_factory):
  """One copy for the relaunches that must change nothing in it."""
  return shutil.copytree(run, tmp_path_factory.mktemp("guarded") / "w")


@pytest.mark.parametrize("field, value", _GUARDED, ids=[f for f, _ in _GUARDED])
def test_a_guarded_field_changed_is_an_error_before_any_restore(
  guarded_workdir, tfds_dir, nothing_built, field, value
):
  work = guarded_workdir
  before = (work / "config.json").read_text()
  stored = json.loads(before)
  for key in field.split("."):
    stored = stored[key]
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _pretrain(_config(tfds_dir, **{field: value}), work)
  new = json.loads(json.dumps(value))
  message = str(e.value)
  lines = message.splitlines()
  assert lines[0] == (
    f"{work} holds a run this config does not fit: it changes fields that "
    "fix the saved state's shapes or meaning (the run's are in "
    f"{work}/config.json):"
  )
  assert lines[1:-1] == [
    f"  {field}: {json.dumps(stored)} in the run, {json.dumps(new)} now"
  ]
  assert lines[-1].startswith(
    f"Resume with the run's values (--config.{field}="
  )
  assert (work / "config.json").read_text() == before  # not rewritten
  assert sorted(os.listdir(work / "checkpoints")) == ["1", "2", "3", "4"]


def test_every_changed_field_is_listed_and_free_fields_are_not(
  guarded_workdir, tfds_dir, nothing_built
):
  work = guarded_workdir
  free = {
    "num_steps": 100,
    "num_epochs": 7,
    "log_every_steps": 5,
    "checkpoint_every_steps": 50,
    "keep_checkpoints": 2,
    "profile": True,
    "init_from": "/elsewhere",
    "data.data_dir": "/elsewhere",
    "data.manual_dir": "/elsewhere",
    "data.csv_path": "/elsewhere/videos.csv",
    "data.cache": False,
    "aug.placement": "device",
    "aug.ship_size": (32, 36),
  }
  assert set(free) | {"data.num_shards"} == set(workdir_lib.FREE_ON_RESUME)
  config = _config(tfds_dir, **free)
  workdir_lib.check_resume_config(config, str(work))  # no error
  config.model.width, config.batch_size = 0.25, 16
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _pretrain(config, work)
  lines = str(e.value).splitlines()
  assert lines[1:3] == [
    "  batch_size: 8 in the run, 16 now",
    "  model.width: 0.125 in the run, 0.25 now",
  ]
  assert "(--config.batch_size=8 --config.model.width=0.125)" in lines[3]
  # data.num_shards is free of the config check; data_stream.json keeps it.
  with pytest.raises(
    workdir_lib.WorkdirError, match=r"num_shards=4 would change its data"
  ):
    _pretrain(_config(tfds_dir, **{"data.num_shards": 4}), work)


def test_without_config_json_the_checkpoint_shapes_still_tell(
  run, tfds_dir, tmp_path
):
  """A workdir without its config.json (a run from before it, or lost):
  a checkpoint of other shapes is another model's state, not damage, so
  nothing is moved aside."""
  work = _copy(run, tmp_path)
  (work / "config.json").unlink()
  with pytest.raises(workdir_lib.WorkdirError) as e:
    _pretrain(_config(tfds_dir, **{"model.width": 0.25}), work)
  message = str(e.value)
  assert message.startswith(
    f"Checkpoint step {_STEPS} in {work}/checkpoints holds another model's "
    "or optimiser's state than this config builds ("
  )
  assert re.search(
    r"\(8,\) float32 in the checkpoint, \(16,\) float32", message
  )
  assert "Its files read: it is not damaged." in message
  assert sorted(os.listdir(work / "checkpoints")) == ["1", "2", "3", "4"]
  assert not (work / "config.json").exists()  # nothing written


def test_the_command_line_ends_with_the_message_and_status_1(
  run, tfds_dir, tmp_path
):
  work = _copy(run, tmp_path)
  r = subprocess.run(
    runs.main_cmd(
      work, {**_RUN, "data.data_dir": tfds_dir, "model.width": 0.25}
    ),
    env=runs.env(1),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 1, r.stderr[-3000:]
  tail = r.stderr[r.stderr.rindex("stclr_jax.main: ") :]
  assert tail.strip().splitlines() == [
    f"stclr_jax.main: {work} holds a run this config does not fit: it "
    "changes fields that fix the saved state's shapes or meaning (the run's"
    f" are in {work}/config.json):",
    "  model.width: 0.125 in the run, 0.25 now",
    "Resume with the run's values (--config.model.width=0.125), or start a "
    "new --workdir. Free to change on resume: "
    + ", ".join(workdir_lib.FREE_ON_RESUME)
    + ".",
  ]
  for noise in ("Traceback", "Event loop is closed"):
    assert noise not in r.stderr, r.stderr[-3000:]


# Two processes relaunched on a workdir whose step 4 is truncated, and
# whose step 3 fails to read on process 1 only (a read error of one host,
# injected); both must move 4 and 3 aside and resume from step 2.
_TWO = r"""
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from absl import logging
logging.set_verbosity("info")
pid, (port, out, data_dir) = int(sys.argv[1]), sys.argv[2:5]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=pid)
import orbax.checkpoint as ocp
restore = ocp.StandardCheckpointHandler.restore
def flaky(self, directory, *a, **k):
  if pid == 1 and directory.parent.name == "3":
    raise ValueError("DATA_LOSS: injected on process 1")
  return restore(self, directory, *a, **k)
ocp.StandardCheckpointHandler.restore = flaky
from configs import stclr_synthetic
from stclr_jax import train
c = stclr_synthetic.get_config("tiny=1")
c.data.data_dir = data_dir
c.data.num_shards = 2
c.num_steps = 2  # the step it resumes from: nothing to train
c.checkpoint_every_steps = 1
c.keep_checkpoints = 10
train.pretrain(c, out)
print("done", flush=True)
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_on_the_step_they_resume_from(
  run, tfds_dir, tmp_path
):
  work = _copy(run, tmp_path)
  _damage("truncated", work, 4)
  script = tmp_path / "two.py"
  script.write_text(_TWO)
  port = str(_free_port())
  procs = [
    runs.Child(
      [sys.executable, script, i, port, work, tfds_dir],
      runs.env(1),
      tmp_path / f"p{i}.log",
    )
    for i in range(2)
  ]
  with procs[0], procs[1]:
    codes = [p.wait(timeout=300) for p in procs]
  logs = [p.log() for p in procs]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  for i, log in enumerate(logs):
    moved = re.findall(
      r"Checkpoint step (\d) does not restore: (.*?)\. Moved", log
    )
    assert [int(s) for s, _ in moved] == [4, 3], log[-3000:]
    assert "OUT_OF_RANGE" in moved[0][1]
    assert moved[1][1] == (
      "ValueError: DATA_LOSS: injected on process 1"
      if i == 1
      else "it failed to read on process [1] (see its log)"
    )
    assert "Resumed from checkpoint step 2" in log
    assert "Event loop is closed" not in log
  assert sorted(os.listdir(work / "checkpoints")) == [
    "1",
    "2",
    "corrupt-3",
    "corrupt-4",
  ]
