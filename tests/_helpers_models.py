"""Helpers shared by the models tests (not a test module)."""

from flax import nnx


@nnx.jit
def forward(model, clips):
  """Jitted forward (eager op-by-op execution is slow on CPU)."""
  return model(clips)
