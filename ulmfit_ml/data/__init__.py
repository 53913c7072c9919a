"""From a DataFrame to fastai ``DataLoaders``: ``MultiLabelData`` (validated columns, label
vocabulary, stratified split, tokens), the tokenizers, the label-set checks and the pretraining
corpus cache. Imports ``tasks`` and ``utils``.

Modules are imported by their full path (``ulmfit_ml.data.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
