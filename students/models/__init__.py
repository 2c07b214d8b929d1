"""Models floor: student architectures and how each is made from a teacher (TinyBERT-style, ETD, ROSITA)."""
