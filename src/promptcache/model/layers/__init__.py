"""The network's building blocks: norm, rotary embedding, MLP and the linear kinds (oneDNN
prepacked, 4-bit, the 8-bit LM head)."""
