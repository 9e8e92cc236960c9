"""The XLA compiler options of the library's jits (stclr_jax/compiler.py)."""

import jax
import numpy as np
from flax import nnx

from stclr_jax import compiler, models
from stclr_jax.pretext.objectives import NTXent


def _ynn_convolutions(compiled_text: str) -> tuple[int, int]:
  """(YNNPACK fusions, those holding a convolution) in compiled HLO."""
  import re

  called = re.findall(r"calls=(%[\w.\-]+)[^\n]*__ynn_fusion", compiled_text)
  with_conv = 0
  for name in called:
    body = re.search(
      re.escape(name) + r" [^{]*\{\n(.*?)\n\}", compiled_text, re.S
    ).group(1)
    with_conv += " convolution(" in body
  return len(called), with_conv


def test_cpu_compiler_options_leave_convolutions_to_eigen(monkeypatch):
  """On the CPU, the option takes the convolutions away from YNNPACK;
  without it, this jaxlib runs them in YNNPACK (so the option is not a
  no-op)."""
  # Large enough for XLA to give YNNPACK the convolution (it keeps small
  # ones, e.g. 8 channels at 6x6, for itself).
  conv = models.VideoConv(
    16, 36, (1, 3, 3), padding=(0, 1, 1), rngs=nnx.Rngs(0)
  )
  gd, st = nnx.split(conv)

  def f(st, x):
    return nnx.merge(gd, st)(x) * 2.0

  x = jax.random.normal(jax.random.key(0), (1, 2, 24, 24, 16))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  opts = compiler.xla_compiler_options("cpu")
  assert opts == {
    "xla_cpu_experimental_ynn_fusion_type": (
      "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    )
  }
  plain = jax.jit(f).lower(st, x).compile().as_text()
  eigen = jax.jit(f, compiler_options=opts).lower(st, x).compile().as_text()
  fusions, with_conv = _ynn_convolutions(plain)
  assert with_conv >= 1
  fusions, with_conv = _ynn_convolutions(eigen)
  assert with_conv == 0
  np.testing.assert_allclose(
    np.asarray(jax.jit(f, compiler_options=opts)(st, x)),
    np.asarray(jax.jit(f)(st, x)),
    rtol=1e-5,
    atol=1e-5,  # Eigen and YNNPACK sum the 144 products in other orders
  )
  # Not on other platforms; and a user's own XLA flag stands.
  assert compiler.xla_compiler_options("gpu") is None
  assert compiler.xla_compiler_options("tpu") is None
  monkeypatch.setenv(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8"
    " --xla_cpu_experimental_ynn_fusion_type=reduce",
  )
  assert compiler.xla_compiler_options("cpu") is None
  assert compiler._ynn_option_supported()


def test_library_steps_take_the_compiler_options(monkeypatch):
  """The pretraining step and the fine-tuning Runner's jits ask for the
  options of their mesh (the options' effect is tested above)."""
  import optax

  from stclr_jax import mesh as mesh_lib
  from stclr_jax import train_step
  from stclr_jax.evaluation import runner as runner_lib

  asked = []

  def spy(mesh):
    asked.append(mesh)
    return compiler.xla_compiler_options(mesh.devices.flat[0].platform)

  monkeypatch.setattr(compiler, "mesh_compiler_options", spy)
  mesh = mesh_lib.make_mesh(jax.devices())
  model = models.ContrastiveModel(
    models.make_encoder("r2plus1d_18", width=0.125, rngs=nnx.Rngs(0)),
    proj_dim=8,
    rngs=nnx.Rngs(1),
  )
  tx = optax.sgd(0.1)
  graphdef, state = train_step.init_state(model, tx, mesh)
  train_step.make_train_step(
    mesh, graphdef, tx, optax.constant_schedule(0.1), state, NTXent(0.1)
  )
  assert asked == [mesh]
  runner = runner_lib.Runner(
    runner_lib.Classifier(
      models.make_encoder("r2plus1d_18", width=0.125, rngs=nnx.Rngs(0)),
      3,
      rngs=nnx.Rngs(0),
    ),
    mesh,
    (0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
  )
  assert asked == [mesh, mesh]
  assert runner._options == compiler.xla_compiler_options("cpu") is not None
