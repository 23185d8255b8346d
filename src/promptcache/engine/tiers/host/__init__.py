"""The host tier: long-retention blocks the pool evicted, copied to host memory."""
