"""ctrtrace: see what really happens when a container starts."""

__version__ = "0.1.0"
