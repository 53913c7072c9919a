"""Whole runs: run directories, the config-driven ``run_lm`` / ``run_train`` / ``run_cv`` /
``evaluate_file``, cross-validation and the bundled demo.

Modules are imported by their full path (``ulmfit_ml.experiments.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
