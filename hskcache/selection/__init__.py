"""Selection floor: pure tensor functions that choose layers, tokens, dimensions and relation rows."""
