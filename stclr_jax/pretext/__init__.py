"""Pretext methods: what each one computes from the model and a batch
(:mod:`stclr_jax.pretext.objectives`, TensorFlow-free)."""
