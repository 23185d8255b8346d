"""`promptcache bench`: a load generator for any OpenAI-compatible endpoint.

Workloads (`workloads.py`) build reproducible sessions of chat requests; the runner
(`runner.py`) sends them streamed, closed-loop or open-loop, and records what each request
saw (`records.py`); `report.py` turns records into figures, tables and JSON, `plots.py`
into PNGs. Nothing here imports the engine: the bench only speaks HTTP.
"""
