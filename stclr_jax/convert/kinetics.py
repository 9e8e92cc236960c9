"""The input normalisation torchvision's Kinetics-400 video weights expect
(no dependencies, so that configs can use it without loading JAX).

RGB frames scaled to [0, 1], then ``(x - mean) / std`` per channel; clips
resized to 128x171 and centre-cropped to 112x112 (torchvision's
VideoClassification transform).
"""

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
