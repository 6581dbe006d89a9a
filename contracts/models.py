"""The three models: kinds, registry names, aliases and Feast feature services.

Training registers the models under these names and moves these aliases; the service loads
``models:/<name>@<alias>`` (or the bundle exported from the same aliases).
"""

from __future__ import annotations

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "EXPERIMENT",
    "FEATURE_SERVICES",
    "KINDS",
    "PARITY_TOLERANCE",
    "REGISTERED_NAMES",
]

#: model kinds, in the order every tool reports them
KINDS: tuple[str, ...] = ("propensity", "send_time", "channel")
#: MLflow registered model name per kind
REGISTERED_NAMES: dict[str, str] = {
    "propensity": "nextbest-propensity",
    "send_time": "nextbest-send-time",
    "channel": "nextbest-channel",
}
#: Feast feature service each model's training set is read through (feature_repo/features.py)
FEATURE_SERVICES: dict[str, str] = {
    "propensity": "propensity_v1",
    "send_time": "send_time_v1",
    "channel": "channel_v1",
}
#: registry aliases: ``train`` sets candidate, ``promote`` moves champion
CANDIDATE = "candidate"
CHAMPION = "champion"
#: the MLflow experiment training runs are logged to
EXPERIMENT = "nextbest"
#: ONNX vs LightGBM (training) and stored example vs served model (service): max |diff|
PARITY_TOLERANCE = 1e-5
