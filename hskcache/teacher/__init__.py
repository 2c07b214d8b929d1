"""Teacher floor: model families, hooks, loading, extraction settings and loop, augmentation."""
