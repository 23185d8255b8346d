"""The usage ledger: one row per request however it ended, with its cost."""
