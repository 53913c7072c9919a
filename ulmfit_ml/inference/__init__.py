"""Using a trained model on new texts: streaming ``predict_file``, Dask scoring, explanations.

Modules are imported by their full path (``ulmfit_ml.inference.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
