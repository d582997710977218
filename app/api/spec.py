"""GET /openapi.json (no API key needed)."""

from flask import Blueprint, Response

from app.api.responses import json_response
from app.openapi import DOCUMENT_BYTES

bp = Blueprint("spec", __name__)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document: the API's contract."""
    return json_response(DOCUMENT_BYTES)
