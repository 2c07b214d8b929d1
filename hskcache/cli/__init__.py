"""CLI floor: the `hskcache` commands (each a settings dataclass and a run function)."""
