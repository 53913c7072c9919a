"""The kinds of directory ulmfit_ml saves: the ``"kind"`` of a saved model's ``config.json`` and of
every ownership marker (:data:`~ulmfit_ml.utils.persist.MARKER`), named once here."""
from __future__ import annotations

__all__ = ["TFIDF_KIND", "ENSEMBLE_KIND", "HASHED_KINDS"]

TFIDF_KIND = "tfidf_baseline"  #: a saved :class:`~ulmfit_ml.models.baseline.TfidfBaseline`
ENSEMBLE_KIND = "ensemble"  #: a saved :class:`~ulmfit_ml.models.ensemble.MultiLabelEnsemble`
#: the kinds whose marker records the sha256 of every file (checked at load: :mod:`ulmfit_ml.utils.manifest`)
HASHED_KINDS = frozenset({"classifier", "language_model", TFIDF_KIND, ENSEMBLE_KIND})
