"""hskcache: run a teacher once, store its compressed hidden-state knowledge, distill students offline."""
from hskcache.store.reader import HSKStore, open_store

__all__ = ["HSKStore", "open_store"]
