"""The disk tier: `24h` blocks in checksummed files that outlive the process."""
