"""``python -m ulmfit_ml.cli ...``: the ``ulmfit-ml`` command line."""
import sys

from . import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
