"""``python -m ulmfit_ml.demo``: the README's main command, kept at this short name. The job itself
is :mod:`ulmfit_ml.experiments.demo`; this module only runs it."""
from .experiments.demo import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
