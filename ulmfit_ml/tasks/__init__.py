"""The kinds of target a model learns (multi-label, multi-category, regression): how each is read
from a frame, encoded, scored and decoded, and its loss. Imports only ``utils``.

Modules are imported by their full path (``ulmfit_ml.tasks.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
