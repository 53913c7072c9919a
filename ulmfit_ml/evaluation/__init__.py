"""Scores and pictures: the multi-label report, threshold search, fastai epoch metrics and the
plots. Imports ``data``, ``tasks`` and ``utils``.

Modules are imported by their full path (``ulmfit_ml.evaluation.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
