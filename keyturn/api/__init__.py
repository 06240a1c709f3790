"""keyturn's REST API (FastAPI) under /api/v1; see docs/api.md."""

from keyturn.api.app import create_app

__all__ = ["create_app"]
