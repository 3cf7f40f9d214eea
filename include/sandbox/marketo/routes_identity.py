"""``GET|POST /identity/oauth/token`` — Marketo's client-credentials token endpoint.

Parameters are query parameters for both verbs (OpenAPI); a form body is also read for POST. Success:
``{"access_token": "<uuid>:ab", "token_type": "bearer", "expires_in": <remaining s>, "scope": <e-mail>}``
(the same token until it expires). Bad id/secret → HTTP 401 ``{"error": "invalid_client",
"error_description": "Bad client credentials"}`` (body shape unconfirmed, status documented).
Identity calls are not counted against any API limit.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .context import ctx_of
from .params import Params, form_pairs, is_form

router = APIRouter()

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=_NO_STORE)


@router.api_route("/identity/oauth/token", methods=["GET", "POST"])
async def token(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    params = Params(request.query_params.multi_items())
    if request.method == "POST" and is_form(request.headers.get("content-type", "")):
        params.extend(form_pairs(await request.body()))
    grant = params.get("grant_type")
    if grant is None:
        return _oauth_error(400, "invalid_request", "Missing grant type")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", f"Unsupported grant type: {grant}")
    client_id = params.get("client_id") or ""
    client_secret = params.get("client_secret") or ""
    issued = ctx.tokens.issue(client_id, client_secret, ctx.settings.token_ttl_s)
    if issued is None:
        return _oauth_error(401, "invalid_client", "Bad client credentials")
    tok, remaining = issued
    return JSONResponse(
        {"access_token": tok.token, "token_type": "bearer", "expires_in": remaining, "scope": tok.email},
        headers=_NO_STORE,
    )
