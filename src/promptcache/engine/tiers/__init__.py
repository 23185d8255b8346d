"""The retention tiers behind the KV pool, each one package behind one protocol
(`promptcache.cache.tiers.LowerTier`): host memory (`host/`) and files on disk (`disk/`).
The prefix cache and the engine call them without knowing which is which."""
