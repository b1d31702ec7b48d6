"""Names and places shared by the launcher, the gateway, the Triton model and the deployment: each defined once.

The project root is where ``model_repository/``, ``models/`` and ``logs/`` live: env ``ARA_RERANKER_HOME``,
else the checkout this package sits in (``<root>/server/ara_reranker_model/``), else the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "MODEL_DIR_ENV", "TRITON_MODEL", "PROJECT_ROOT", "MODEL_REPOSITORY", "MODELS_ROOT", "project_root"]

HOME_ENV = "ARA_RERANKER_HOME"
# Read by model.py: the weights' directory, over the config's model_dir parameter (the Triton image sets it).
MODEL_DIR_ENV = "ARA_RERANKER_MODEL_DIR"
# The Triton model of model_repository/, and the one the gateway calls when it serves one model.
TRITON_MODEL = "ara_reranker"


def project_root() -> Path:
    """Where model_repository/, models/ and logs/ are (see the module's doc)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).resolve()
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "model_repository").is_dir() else Path.cwd()


PROJECT_ROOT = project_root()
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
MODELS_ROOT = PROJECT_ROOT / "models"
