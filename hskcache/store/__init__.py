"""Store floor: a store of knowledge kinds (its shape, metadata, Zarr group, reader and verification)."""
