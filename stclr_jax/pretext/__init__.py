"""Pretext methods, in four rooms:

* :mod:`~stclr_jax.pretext.views`: which frames form a video's views
  (ST-CLR's pair, SSL-FER's TimeAug and HardNeg), in TF ops.
* :mod:`~stclr_jax.pretext.plans`: which videos share a batch (the
  same-subject and whole-group batch plans), in NumPy.
* :mod:`~stclr_jax.pretext.face_parts`: MaskFN's eye and mouth crops of a
  frame, in TF ops.
* :mod:`~stclr_jax.pretext.objectives`: what each method computes from the
  model and a batch, TensorFlow-free.

The input streams (:mod:`stclr_jax.data`) apply the first three; the train
step applies the objective. Importing this package imports none of them.
"""
