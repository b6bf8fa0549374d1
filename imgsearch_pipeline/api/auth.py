"""Who may read the index: API keys, and signed image links for the page's <img> tags.

When keys are configured (IMGSEARCH_API_KEYS) every data endpoint needs header
``X-API-Key``. The API keeps only the keys' SHA-256 digests and compares digests with
``hmac.compare_digest``, against every stored digest, so timing says nothing about a key.

An ``<img>`` tag cannot send a header, so the image links in search answers are signed
(HMAC of the uuid and an expiry): like a presigned S3 URL, a link grants that one image for
a while and nothing else. The secret comes from the settings, so every worker process and
every replica given the same settings accepts the links any of them gave:
IMGSEARCH_API_LINK_SECRET, or else one derived from the configured keys.
"""

import hashlib
import hmac
import secrets
import time
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from .settings import ApiSettings, key_digest

KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=KEY_HEADER, auto_error=False,
                        description="Needed when the server has API keys configured.")


class Unauthorized(RuntimeError):
    """No key, or a wrong one: answered with 401 and ``WWW-Authenticate``."""


def key_is_valid(settings: ApiSettings, key: str | None) -> bool:
    if not key:
        return False
    digest = key_digest(key)
    # Every stored digest is compared, so the time taken does not depend on which matched.
    return any([hmac.compare_digest(digest, stored) for stored in settings.key_digests])


def _check(settings: ApiSettings, key: str | None) -> None:
    if not settings.auth_required:
        return
    if not key:
        raise Unauthorized(f"an API key is required: send it in the {KEY_HEADER} header")
    if not key_is_valid(settings, key):
        raise Unauthorized("invalid API key")


async def require_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    _check(request.app.state.settings, key)


# Domain separation: the derived secret is used for nothing but signing image links.
LINK_SECRET_LABEL = b"imgsearch api: image link signing v1"


def link_secret(settings: ApiSettings) -> bytes | None:
    """The secret of signed links, the same in every process given the same settings:
    IMGSEARCH_API_LINK_SECRET, else (keys on) an HMAC over the sorted key digests, so no
    key or digest is the secret itself. None when neither is set (keys off: no signed links)."""
    if settings.link_secret is not None:
        return settings.link_secret.get_secret_value().encode()
    if not settings.auth_required:
        return None
    # A set, sorted: the order and repetition of the keys in the variable do not matter.
    material = "\n".join(sorted(set(settings.key_digests))).encode()
    return hmac.new(material, LINK_SECRET_LABEL, hashlib.sha256).digest()


class LinkSigner:
    """Signs ``/images/{uuid}`` links for a limited time."""

    def __init__(self, ttl_s: int, secret: bytes | None = None):
        self.ttl_s = ttl_s
        # Random only when nothing is configured: links are then never signed (keys off).
        self._secret = secret or secrets.token_bytes(32)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> "LinkSigner":
        return cls(settings.link_ttl_s, link_secret(settings))

    def _signature(self, uuid: str, expires: int) -> str:
        return hmac.new(self._secret, f"{uuid}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def query(self, uuid: str, now: float | None = None) -> str:
        # Rounded up to the next ttl boundary: repeated answers give the same (cacheable) link.
        now = time.time() if now is None else now
        expires = (int(now) // self.ttl_s + 2) * self.ttl_s
        return f"exp={expires}&sig={self._signature(uuid, expires)}"

    def valid(self, uuid: str, expires: int | None, signature: str | None) -> bool:
        if expires is None or signature is None or expires < time.time():
            return False
        return hmac.compare_digest(self._signature(uuid, expires), signature)


async def require_key_or_signature(
    request: Request,
    key: Annotated[str | None, Depends(_api_key)],
    exp: Annotated[int | None, Query(ge=0, le=2**40, description=(
        "Expiry of a signed link (search answers give signed image links when keys are on)."))] = None,
    sig: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$",
                                     description="Signature of a signed link.")] = None,
) -> None:
    settings: ApiSettings = request.app.state.settings
    uuid = request.path_params.get("uuid", "")
    if settings.auth_required and request.app.state.signer.valid(uuid, exp, sig):
        return
    _check(settings, key)
