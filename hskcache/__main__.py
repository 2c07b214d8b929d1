"""`python -m hskcache ...`, e.g. under `torchrun --nproc_per_node N -m hskcache extract ...`."""
import sys

from hskcache.cli.main import main

sys.exit(main())
