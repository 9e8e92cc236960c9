"""Input side: datasets (TFDS builders), temporal sampling, clip-consistent
augmentation and the tf.data pretraining streams (``views``: a video's
pretraining element; ``streams``: epochs, batch plans and exact resume;
``videos``: shards, caching and in-memory videos; ``seeds``: the streams'
seed constants). Imports TensorFlow, except ``device_augment`` (the
augmentation the jitted step applies on the device), which the
TensorFlow-free train step imports."""
