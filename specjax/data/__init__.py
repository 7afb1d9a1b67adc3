"""Data: corpus readers and token stores (corpus), [B, T] packing (packing), chat formatting with
response-only loss masks (chat), and the offline default corpus (default_corpus)."""
