"""Model-loading errors: each says what is wrong and what to do about it."""


class ModelLoadError(RuntimeError):
    """A model could not be found, converted or loaded."""
