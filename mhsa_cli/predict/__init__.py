"""``mhsa predict``: labels and probabilities for new text (see :mod:`.command`),
from any model a registered loader can open (:mod:`.loaders`)."""

from __future__ import annotations

from .command import Prediction, PredictResult, predict, predict_texts
from .loaders import LOADERS, Loaded, Loader, load_for_predict, register

__all__ = ["LOADERS", "Loaded", "Loader", "Prediction", "PredictResult", "load_for_predict", "predict",
           "predict_texts", "register"]
