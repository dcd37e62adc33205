"""facesift: turn large, messy face-photo collections into clean, split, training-ready datasets."""

__version__ = "0.1.0"
