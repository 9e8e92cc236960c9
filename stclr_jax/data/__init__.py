"""Input side: datasets (TFDS builders), temporal sampling, clip-consistent
augmentation and the tf.data pipeline. Imports TensorFlow."""
