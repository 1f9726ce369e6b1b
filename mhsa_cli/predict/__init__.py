"""``mhsa predict``: labels and probabilities for new text (see :mod:`.command`),
from any model a runtime of the one registry loads (:mod:`mhsa_cli.runtimes`, picked by :mod:`.loaders`)."""

from __future__ import annotations

from .command import Prediction, PredictResult, predict, predict_texts
from .loaders import load_for_predict

__all__ = ["Prediction", "PredictResult", "load_for_predict", "predict", "predict_texts"]
