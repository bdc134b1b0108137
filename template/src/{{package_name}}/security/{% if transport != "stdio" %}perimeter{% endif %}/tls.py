"""TLS and mutual TLS for uvicorn, loaded once before start-up so a bad file is a message, not a traceback."""

from __future__ import annotations

import ssl
from typing import Any

from ...settings import Settings


def tls_problems(settings: Settings) -> list[str]:
    """Each configured PEM file must load; the message names the setting and the fix."""
    if settings.tls_certfile is None or settings.tls_keyfile is None:
        return []
    problems: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    except (OSError, ssl.SSLError) as exc:
        problems.append(
            f"MCP_TLS_CERTFILE/MCP_TLS_KEYFILE cannot be loaded ({_why(exc)}): point them at a readable PEM "
            "certificate chain and its private key"
        )
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            problems.append(
                f"MCP_TLS_CLIENT_CA cannot be loaded ({_why(exc)}): point it at the PEM certificate of "
                "the CA that signs client certificates"
            )
    return problems


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments: a client CA makes a client certificate signed by it required."""
    return {
        "ssl_certfile": settings.tls_certfile,
        "ssl_keyfile": settings.tls_keyfile,
        "ssl_ca_certs": str(settings.tls_client_ca) if settings.tls_client_ca else None,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
    }


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "not a PEM file"
    return exc.strerror or type(exc).__name__
