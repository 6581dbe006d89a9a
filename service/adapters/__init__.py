"""I/O at the edges: Redis (features, contact history, decision log), models, Feast SDK."""
