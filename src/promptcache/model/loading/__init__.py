"""From a model reference to a loaded model: the bundled model, GGUF conversion and its
4-bit and 8-bit readers, checkpoints, shapes, the content fingerprint and the loader."""
