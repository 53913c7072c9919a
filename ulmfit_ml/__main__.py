"""``python -m ulmfit_ml ...`` runs the ``ulmfit-ml`` command line."""
import sys

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
