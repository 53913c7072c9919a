"""Values, files and settings, with no texts, labels or models: config dataclasses and files, the
atomic writer and ownership marker, table I/O, input validation, devices, seeds and progress
(scikit-learn's ``utils``). Imports nothing else of ulmfit_ml.

Modules are imported by their full path (``ulmfit_ml.utils.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
