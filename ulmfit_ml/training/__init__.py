"""What turns data into models (fastai ``Learner``s live here only): pretraining, LM fine-tuning,
classifier training with gradual unfreezing and discriminative rates, checkpoints, ``lr_find``.

Modules are imported by their full path (``ulmfit_ml.training.<module>``); the public names are
``ulmfit_ml``'s own (``import ulmfit_ml as um``).
"""
