"""The training tests use the session fixtures ``trained`` and ``model_bundle`` (tests/conftest.py).

Reuses ``small_world`` / ``sqlite_store`` / ``var_dir`` from tests/conftest.py (NEXTBEST_VAR_DIR
and MLFLOW_TRACKING_URI point into a temporary folder; the online store is SQLite).
"""

from __future__ import annotations
