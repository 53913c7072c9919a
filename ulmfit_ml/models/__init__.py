"""Trained models that hold no ``Learner``: ``LanguageModel``, ``MultiLabelClassifier`` and the
other heads, ensembles, the TF-IDF baseline; each predicts, saves and loads itself, and
``load_classifier`` rebuilds any saved one (``registry``).

Modules are imported by their full path (``ulmfit_ml.models.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
