"""Pretext methods. Two modules say what a run has:

* :mod:`~stclr_jax.pretext.options`: each method's config section,
  resolved and validated once (:class:`~stclr_jax.pretext.options.Pretext`).
* :mod:`~stclr_jax.pretext.batch`: the batch's keys (its schema) and the
  host's counters.

and four rooms do the work:

* :mod:`~stclr_jax.pretext.views`: which frames form a video's views
  (ST-CLR's pair, SSL-FER's TimeAug and HardNeg), in TF ops.
* :mod:`~stclr_jax.pretext.plans`: which videos share a batch (the
  same-subject and whole-group batch plans), in NumPy.
* :mod:`~stclr_jax.pretext.face_parts`: MaskFN's eye and mouth crops of a
  frame, in TF ops.
* :mod:`~stclr_jax.pretext.objectives`: what each method computes from the
  model and a batch, TensorFlow-free; masked autoencoding's tube masks are
  :mod:`~stclr_jax.pretext.masking`'s.

The input streams (:mod:`stclr_jax.data`) apply the first three; the train
step applies the objective. Importing this package imports none of them.
"""
