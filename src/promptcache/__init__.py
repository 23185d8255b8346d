"""promptcache: a self-hosted, OpenAI-compatible LLM server built around prompt caching."""

__version__ = "0.1.0"
