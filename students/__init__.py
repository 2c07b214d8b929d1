"""Students distilled from an HSK store: models, losses, metrics, training."""

from students import rosita  # noqa: F401  (registers ROSITA with the Auto classes)
