"""MLflow's webhook deliveries, checked before anything in them is believed (``autotts gatekeeper``).

MLflow 3.17 (``mlflow/webhooks/delivery.py``) posts a JSON body
``{"entity", "action", "timestamp", "data"}`` with three headers, after the Standard
Webhooks scheme:

- ``X-MLflow-Delivery-Id``: a uuid4 per delivery; urllib3's retries of one delivery (on
  429 and 5xx) resend the same id, timestamp and signature;
- ``X-MLflow-Timestamp``: unix seconds when the delivery was first sent;
- ``X-MLflow-Signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` with the
  webhook's secret (absent when the webhook has none).

``verify`` accepts a delivery only when it is signed with the secret and its timestamp is
within ``max_age`` seconds of now, so a captured delivery cannot be replayed later and
none can be forged; a replay within the window carries an id already seen, which the
journal (``promotion/journal.py``) answers as a duplicate. Only then is the body parsed:
``alias_change`` reads the one event the gatekeeper acts on,
``model_version_alias.created`` (``{"name", "alias", "version"}``). Every refusal is a
``WebhookRefused`` with the HTTP status to answer and a sentence naming what was wrong.

The secret is shared by ``autotts gatekeeper install`` (which gives it to MLflow) and
``serve`` (which checks with it): the ``AUTOTTS_GATEKEEPER_SECRET`` variable, else a file in
the state directory, written once with mode 0600. No MLflow here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow_autotts.errors import AutoTTSError, safe_text

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
ALIAS_CREATED = "model_version_alias.created"
"""The event the gatekeeper acts on (``entity.action``, as ``MlflowClient.create_webhook`` names it)."""
SECRET_ENV = "AUTOTTS_GATEKEEPER_SECRET"
MIN_SECRET_CHARS = 16
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_MAX_NAME_CHARS = 256  # MLflow's limit on registered model names and aliases is lower


class WebhookRefused(AutoTTSError):
    """A delivery not accepted, with the HTTP status to answer (401: not proven to come from
    MLflow now; 400: signed but not a payload MLflow sends)."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature and timestamp were checked; its body is parsed JSON."""

    id: str
    """``X-MLflow-Delivery-Id``: the same on MLflow's retries of it."""
    timestamp: int
    """``X-MLflow-Timestamp``: unix seconds when MLflow first sent it."""
    event: str
    """``entity.action``, e.g. ``model_version_alias.created``."""
    data: Mapping[str, Any]
    """The event's payload (``mlflow/webhooks/types.py``)."""


@dataclass(frozen=True)
class AliasChange:
    """``model_version_alias.created``: ``alias`` now points at ``version`` of model ``name``."""

    name: str
    alias: str
    version: str


# ---------------------------------------------------------------------- signature
def _mac(secret: str, delivery_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    return f"{SIGNATURE_VERSION},{base64.b64encode(_mac(secret, delivery_id, timestamp, body)).decode()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _signatures(value: str) -> list[bytes]:
    """The ``v1`` signatures of a header value (Standard Webhooks allows several, space-separated)."""
    out = []
    for item in value.split():
        version, sep, encoded = item.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, max_age: float) -> Delivery:
    """The delivery in ``headers`` and ``body`` if MLflow signed it with ``secret`` within
    ``max_age`` seconds of ``now``; else ``WebhookRefused`` saying what is missing or wrong."""
    delivery_id = _header(headers, DELIVERY_ID_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None:
        raise WebhookRefused(401, f"unsigned delivery: no {SIGNATURE_HEADER} header (install the webhook "
                                  "with a secret: autotts gatekeeper install)")
    if delivery_id is None or stamp is None:
        missing = [h for h, v in ((DELIVERY_ID_HEADER, delivery_id), (TIMESTAMP_HEADER, stamp)) if v is None]
        raise WebhookRefused(401, f"delivery without the {' and '.join(missing)} header")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise WebhookRefused(401, f"{DELIVERY_ID_HEADER} {safe_text(delivery_id, 80)!r} is not a delivery id")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookRefused(401, f"{TIMESTAMP_HEADER} {safe_text(stamp, 80)!r} is not unix seconds")
    expected = _mac(secret, delivery_id, stamp, body)
    if not any(hmac.compare_digest(expected, given) for given in _signatures(signature)):
        raise WebhookRefused(401, f"delivery {delivery_id}: {SIGNATURE_HEADER} does not match (another secret, "
                                  "or the body, id or timestamp was changed)")
    age = now - int(stamp)
    if age > max_age:
        raise WebhookRefused(401, f"delivery {delivery_id}: stale, sent {age:.0f} s ago (at most {max_age:g} s "
                                  "are accepted; a replayed delivery is refused)")
    if age < -max_age:
        raise WebhookRefused(401, f"delivery {delivery_id}: timestamp {-age:.0f} s in the future (clocks apart "
                                  f"by more than {max_age:g} s?)")
    event, data = parse_body(body, delivery_id)
    return Delivery(delivery_id, int(stamp), event, data)


# ------------------------------------------------------------------------ payload
def parse_body(body: bytes, delivery_id: str = "?") -> tuple[str, Mapping[str, Any]]:
    """(``entity.action``, data) of a delivery body; ``WebhookRefused`` (400) for any other shape."""
    def bad(why: str) -> WebhookRefused:
        return WebhookRefused(400, f"delivery {delivery_id}: {why}")

    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"body is not JSON ({safe_text(exc, 200)})") from None
    if not isinstance(payload, dict):
        raise bad(f"body is a JSON {type(payload).__name__}, not an object")
    for key in ("entity", "action"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise bad(f"field {key!r} is missing or not a string")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise bad("field 'data' is missing or not an object")
    return f"{payload['entity']}.{payload['action']}", data


def alias_change(delivery: Delivery) -> AliasChange | None:
    """The alias move a ``model_version_alias.created`` delivery reports; None for other events."""
    if delivery.event != ALIAS_CREATED:
        return None
    values = {}
    for key in ("name", "alias", "version"):
        value = delivery.data.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME_CHARS:
            raise WebhookRefused(400, f"delivery {delivery.id}: {ALIAS_CREATED} field 'data.{key}' is missing, "
                                      f"empty, too long or not a string: {safe_text(repr(value), 80)}")
        values[key] = value
    if not _VERSION.fullmatch(values["version"]):
        raise WebhookRefused(400, f"delivery {delivery.id}: {ALIAS_CREATED} field 'data.version' "
                                  f"{safe_text(values['version'], 80)!r} is not a version number")
    return AliasChange(values["name"], values["alias"], values["version"])


# ------------------------------------------------------------------------- secret
def read_secret(path: Path, environ: Mapping[str, str] = os.environ) -> str:
    """The webhook secret: ``AUTOTTS_GATEKEEPER_SECRET``, else the file at ``path``."""
    secret = environ.get(SECRET_ENV)
    where = f"${SECRET_ENV}"
    if secret is None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise AutoTTSError(f"no webhook secret: set {SECRET_ENV} or run `autotts gatekeeper install` with "
                               f"this --state-dir first (it writes {path})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AutoTTSError(f"{path}: cannot read the webhook secret ({safe_text(exc, 200)})") from None
        where = str(path)
    if len(secret) < MIN_SECRET_CHARS or not secret.isprintable() or secret != secret.strip():
        raise AutoTTSError(f"{where}: the webhook secret must be at least {MIN_SECRET_CHARS} printable "
                           "characters without surrounding spaces")
    return secret


def ensure_secret(path: Path, environ: Mapping[str, str] = os.environ) -> tuple[str, bool]:
    """(the webhook secret, whether it was created now): ``read_secret``'s, else a new random
    one written to ``path`` with mode 0600 (never overwriting one that appeared meanwhile)."""
    if environ.get(SECRET_ENV) is not None or path.exists():
        return read_secret(path, environ), False
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path, environ), False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    return secret, True


__all__ = ["ALIAS_CREATED", "AliasChange", "Delivery", "DELIVERY_ID_HEADER", "SECRET_ENV", "SIGNATURE_HEADER",
           "TIMESTAMP_HEADER", "WebhookRefused", "alias_change", "ensure_secret", "parse_body", "read_secret",
           "sign", "verify"]
