"""P(opacity) as a probability: logistic recalibration of the classifier, optionally with header facts.

The classifiers' softmax is over-confident on the small data they were trained on, so the P(opacity) the gate reads
and the user sees passes through a logistic model fitted on **out-of-fold** predictions of the training images
(each image scored by a model that never saw its patient)::

    P = sigmoid(intercept + sum(coef[i] * feature[i](p, view, metadata)))

With the feature ``logit`` alone this is Platt scaling. The header features add View Position, Patient's Age and
Patient's Sex, read from the DICOM header at inference. They are a known shortcut: AP films are taken with portable
machines, of sicker patients, so "AP" raises P(opacity) whatever the lungs show. PNG/JPEG input has no header: its
features take the "unknown" value, which the fit learns from a copy of every training row with its header removed.

The evidence feature ``det_score`` is the detector's top box score on the image (0 when it found none). A
calibration that reads it (a manifest's ``fusion`` table) names the detector it was fitted with by a sha256 prefix
and applies only after that detector ran; otherwise the classifier-only calibration stands.

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
    "EVIDENCE_FEATURES",
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


# name → f(p, view, metadata, evidence); ``p`` is the classifier's P(opacity), ``view`` as in XrayImage.view,
# ``evidence`` the other models' outputs by name (``det_score``).
FEATURES: Mapping[str, Callable[[float, str | None, Mapping[str, str], Mapping[str, float]], float]] = {
    "logit": lambda p, v, m, e: _logit(p),
    "view_ap": lambda p, v, m, e: float(_view(v) == "AP"),
    "view_unknown": lambda p, v, m, e: float(_view(v) not in ("AP", "PA")),
    "age": lambda p, v, m, e: 0.0 if (a := _age(m)) is None else (a - _AGE_CENTRE) / _AGE_SCALE,
    "age_unknown": lambda p, v, m, e: float(_age(m) is None),
    "sex_male": lambda p, v, m, e: float(_sex(m) == "M"),
    "sex_unknown": lambda p, v, m, e: float(_sex(m) not in ("M", "F")),
    "det_score": lambda p, v, m, e: float(e["det_score"]),
}
HEADER_FEATURES = ("view_ap", "view_unknown", "age", "age_unknown", "sex_male", "sex_unknown")
EVIDENCE_FEATURES = ("det_score",)


def feature_row(
    features: Sequence[str],
    p: float,
    view: str | None,
    metadata: Mapping[str, str],
    evidence: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The feature vector (float64) of one image.

    Raises:
        KeyError: an evidence feature whose value ``evidence`` lacks.
    """
    e = evidence or {}
    return np.array([FEATURES[name](p, view, metadata, e) for name in features], dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """A fitted logistic recalibration of P(opacity) (see the module docstring).

    Attributes:
        features: names from :data:`FEATURES`, in the order of ``coef``.
        coef, intercept: the fitted logistic model.
        fitted_on: what it was fitted on, for the model card.
        detector: sha256 prefix (at least 12 hex digits) of the detector whose top score ``det_score`` is; required
            when an evidence feature is used, since the coefficients hold for that detector's scores only.
    """

    features: tuple[str, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: str = ""
    detector: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown calibration feature(s) {unknown}; valid: {', '.join(FEATURES)}")
        if len(self.coef) != len(self.features):
            raise ValueError(
                f"calibration has {len(self.features)} features but {len(self.coef)} coefficients"
            )
        if self.uses_evidence and len(self.detector) < 12:
            raise ValueError(
                "a calibration reading det_score must name its detector (sha256, 12+ hex digits)"
            )

    @property
    def uses_evidence(self) -> bool:
        """True when the probability depends on another model's output (the detector's top score)."""
        return any(f in EVIDENCE_FEATURES for f in self.features)

    def fits_detector(self, sha256: str) -> bool:
        """True when ``sha256`` is the digest of the detector this calibration was fitted with."""
        return bool(self.detector) and sha256.lower().startswith(self.detector.lower())

    @property
    def uses_header(self) -> bool:
        """True when the probability depends on the DICOM header (view, age, sex)."""
        return any(f in HEADER_FEATURES for f in self.features)

    def describe(self) -> str:
        """One paragraph for model cards: what the probability shown is, and the shortcut it may take."""
        text = "P(opacity) is recalibrated by a logistic model fitted on " + (
            self.fitted_on or "out-of-fold predictions of the training images"
        )
        if self.uses_evidence:
            text += (
                f", with the detector's top box score as a second input (detector sha256 {self.detector[:12]}); "
                "it applies after that detector ran, otherwise the classifier-only calibration does"
            )
        if not self.uses_header:
            return text + "."
        return (
            text
            + ", with View Position, Patient's Age and Patient's Sex read from the DICOM header. This is a known "
            "shortcut: AP films are taken with portable machines, of sicker patients, so an AP view raises "
            "P(opacity) whatever the lungs show. PNG/JPEG input has no header and takes the fitted 'unknown' terms."
        )

    def apply(
        self,
        p: float,
        view: str | None = None,
        metadata: Mapping[str, str] | None = None,
        evidence: Mapping[str, float] | None = None,
    ) -> float:
        """The calibrated probability for a raw P(opacity) ``p``, the image's header facts and, for a fusion, the
        other models' ``evidence`` (``{"det_score": top detector score in [0, 1]}``)."""
        x = feature_row(self.features, p, view, metadata or {}, evidence)
        z = self.intercept + float(np.dot(np.asarray(self.coef), x))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """From a manifest table ``calibration = { features = [...], coef = [...], intercept = x, ... }``."""
        allowed = {"features", "coef", "intercept", "fitted_on", "metrics", "detector"}
        stray = sorted(set(d) - allowed)
        if stray:
            raise ValueError(f"unknown calibration key(s) {stray}; valid: {', '.join(sorted(allowed))}")
        return cls(
            features=tuple(str(f) for f in d["features"]),
            coef=tuple(float(c) for c in d["coef"]),
            intercept=float(d["intercept"]),
            fitted_on=str(d.get("fitted_on", "")),
            detector=str(d.get("detector", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest table (coefficients rounded to 6 decimals)."""
        out: dict[str, Any] = {
            "features": list(self.features),
            "coef": [round(c, 6) for c in self.coef],
            "intercept": round(self.intercept, 6),
            "fitted_on": self.fitted_on,
        }
        if self.detector:
            out["detector"] = self.detector
        return out


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
