"""stclr_jax: ST-CLR (spatiotemporal contrastive learning of facial expressions
in videos, Roy & Etemad 2021) in JAX / Flax NNX."""

__version__ = "0.1.0"
