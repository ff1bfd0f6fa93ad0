"""Example asyncio service over kmsbox: per-tenant secrets served by Starlette.

Run it with ``uvicorn --factory tenant_service:create_app`` (see the README).
"""

from tenant_service.app import CALLER_HEADER, REQUEST_ID_HEADER, create_app

__all__ = ["CALLER_HEADER", "REQUEST_ID_HEADER", "create_app"]
