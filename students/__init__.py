"""Students distilled from an HSK store: models, losses, metrics, training."""
