"""Students distilled from an HSK store: models, losses, metrics, training."""

from students.models import rosita
