"""P(opacity) as a probability: logistic recalibration of the classifier, optionally with header facts.

The classifiers' softmax is over-confident on the small data they were trained on, so the P(opacity) the gate reads
and the user sees passes through a logistic model fitted on **out-of-fold** predictions of the training images
(each image scored by a model that never saw its patient)::

    P = sigmoid(intercept + sum(coef[i] * feature[i](p, view, metadata)))

With the feature ``logit`` alone this is Platt scaling. The header features add View Position, Patient's Age and
Patient's Sex, read from the DICOM header at inference. They are a known shortcut: AP films are taken with portable
machines, of sicker patients, so "AP" raises P(opacity) whatever the lungs show. PNG/JPEG input has no header: its
features take the "unknown" value, which the fit learns from a copy of every training row with its header removed.

Qt-free and torch-free; the engine applies it, ``tools/fit_calibration.py`` fits it, the manifest stores it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumoview.suitability import parse_age_years

__all__ = [
    "FEATURES",
    "Calibration",
    "expected_calibration_error",
    "feature_row",
    "fit_logistic",
    "reliability_bins",
]

_EPS = 1e-4
_AGE_CENTRE, _AGE_SCALE = 50.0, 20.0  # years: the feature is (age - 50) / 20


def _logit(p: float) -> float:
    q = min(1.0 - _EPS, max(_EPS, float(p)))
    return math.log(q / (1.0 - q))


def _view(view: str | None) -> str:
    return (view or "").strip().upper()


def _age(metadata: Mapping[str, str]) -> float | None:
    age = parse_age_years(metadata.get("PatientAge"))
    return None if age is None or not 0.0 <= age <= 120.0 else age


def _sex(metadata: Mapping[str, str]) -> str:
    return str(metadata.get("PatientSex", "")).strip().upper()


# name → f(p, view, metadata); ``p`` is the classifier's P(opacity), ``view`` as in XrayImage.view.
FEATURES: Mapping[str, Callable[[float, str | None, Mapping[str, str]], float]] = {
    "logit": lambda p, v, m: _logit(p),
    "view_ap": lambda p, v, m: float(_view(v) == "AP"),
    "view_unknown": lambda p, v, m: float(_view(v) not in ("AP", "PA")),
    "age": lambda p, v, m: 0.0 if (a := _age(m)) is None else (a - _AGE_CENTRE) / _AGE_SCALE,
    "age_unknown": lambda p, v, m: float(_age(m) is None),
    "sex_male": lambda p, v, m: float(_sex(m) == "M"),
    "sex_unknown": lambda p, v, m: float(_sex(m) not in ("M", "F")),
}
HEADER_FEATURES = ("view_ap", "view_unknown", "age", "age_unknown", "sex_male", "sex_unknown")


def feature_row(
    features: Sequence[str], p: float, view: str | None, metadata: Mapping[str, str]
) -> np.ndarray:
    """The feature vector (float64) of one image."""
    return np.array([FEATURES[name](p, view, metadata) for name in features], dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """A fitted logistic recalibration of P(opacity) (see the module docstring).

    Attributes:
        features: names from :data:`FEATURES`, in the order of ``coef``.
        coef, intercept: the fitted logistic model.
        fitted_on: what it was fitted on, for the model card.
    """

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown calibration feature(s) {unknown}; valid: {', '.join(FEATURES)}")
        if len(self.coef) != len(self.features):
            raise ValueError(
                f"calibration has {len(self.features)} features but {len(self.coef)} coefficients"
            )

    @property
    def uses_header(self) -> bool:
        """True when the probability depends on the DICOM header (view, age, sex)."""
        return any(f in HEADER_FEATURES for f in self.features)

    def describe(self) -> str:
        """One paragraph for model cards: what the probability shown is, and the shortcut it may take."""
        text = "P(opacity) is recalibrated by a logistic model fitted on " + (
            self.fitted_on or "out-of-fold predictions of the training images"
        )
        if not self.uses_header:
            return text + "."
        return (
            text
            + ", with View Position, Patient's Age and Patient's Sex read from the DICOM header. This is a known "
            "shortcut: AP films are taken with portable machines, of sicker patients, so an AP view raises "
            "P(opacity) whatever the lungs show. PNG/JPEG input has no header and takes the fitted 'unknown' terms."
        )

    def apply(self, p: float, view: str | None = None, metadata: Mapping[str, str] | None = None) -> float:
        """The calibrated probability for a raw P(opacity) ``p`` and the image's header facts."""
        x = feature_row(self.features, p, view, metadata or {})
        z = self.intercept + float(np.dot(np.asarray(self.coef), x))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """From a manifest table ``calibration = { features = [...], coef = [...], intercept = x, ... }``."""
        allowed = {"features", "coef", "intercept", "fitted_on", "metrics"}
        stray = sorted(set(d) - allowed)
        if stray:
            raise ValueError(f"unknown calibration key(s) {stray}; valid: {', '.join(sorted(allowed))}")
        return cls(
            features=tuple(str(f) for f in d["features"]),
            coef=tuple(float(c) for c in d["coef"]),
            intercept=float(d["intercept"]),
            fitted_on=str(d.get("fitted_on", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest table (coefficients rounded to 6 decimals)."""
        return {
            "features": list(self.features),
            "coef": [round(c, 6) for c in self.coef],
            "intercept": round(self.intercept, 6),
            "fitted_on": self.fitted_on,
        }


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """Penalised logistic regression by Newton's method: ``(coef, intercept)``.

    Args:
        x: ``(N, F)`` features; y: ``(N,)`` 0/1 labels.
        l2: ridge penalty on the coefficients (not the intercept), per sample.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, f = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(f + 1)
    penalty = np.full(f + 1, l2 * n)
    penalty[-1] = 0.0
    for _ in range(iterations):
        z = np.clip(a @ w, -50.0, 50.0)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1.0 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return w[:-1], float(w[-1])


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[tuple[float, float, float, int]]:
    """Equal-width bins of predicted probability: ``(low, mean predicted, observed frequency, count)`` per
    non-empty bin."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append((b / bins, float(p[sel].mean()), float(y[sel].mean()), int(sel.sum())))
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width bins: the count-weighted mean of |mean predicted − observed frequency|."""
    n = len(np.asarray(p))
    return sum(abs(mp - obs) * k for _, mp, obs, k in reliability_bins(p, y, bins)) / max(1, n)
