"""Storage floor: array rules, codecs, width codes, chunk checks and backends; it knows no kind of knowledge."""
