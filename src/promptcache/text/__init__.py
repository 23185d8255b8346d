"""Text in and out of the model: chat rendering with message spans, and the incremental
detokenizer with stop strings."""
