"""Delivery channels: e-mail over SMTP, and webhooks (JSON POST, HMAC-SHA256 signed).

A webhook body is Slack-compatible (`text`) and carries the notice's fields; the header
`X-Keyturn-Signature: sha256=<hex>` is the HMAC-SHA256, under the channel's secret, of
`<X-Keyturn-Timestamp>.<body>`, so a receiver can check origin and freshness.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from keyturn.db.models import Channel, Notice
from keyturn.domain.errors import ConfigInvalid, KeyturnError
from keyturn.domain.inputs import first_error
from keyturn.domain.model import Secret
from keyturn.refs import Resolver, require_reference

TIMEOUT = 10.0


class DeliveryFailed(KeyturnError):
    """The notice could not be delivered; it stays in the outbox and is retried."""

    code = "delivery_failed"


class EmailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = 25
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    sender: str = "keyturn@localhost"
    username: str | None = None
    password: str | None = None  # a reference


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    secret: str  # a reference to the signing key


def validate(name: str, type_: str, settings: dict[str, Any]) -> BaseModel:
    models: dict[str, type[BaseModel]] = {"email": EmailConfig, "webhook": WebhookConfig}
    model = models.get(type_)
    if model is None:
        raise ConfigInvalid(f'channel {name!r}: type must be "email" or "webhook"')
    try:
        config = model.model_validate(settings)
    except ValidationError as exc:
        raise ConfigInvalid(f"channel {name!r}: {first_error(exc)}") from exc
    for key in ("password", "secret"):
        value = getattr(config, key, None)
        if value is not None:
            require_reference(value, f"channel {name}", key)
    return config


def signature(secret: Secret, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.reveal().encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send(channel: Channel, notice: Notice, resolve: Resolver) -> None:
    config = validate(channel.name, channel.type, channel.settings)
    if isinstance(config, WebhookConfig):
        _webhook(config, notice, resolve)
    else:
        assert isinstance(config, EmailConfig)
        _email(config, notice, resolve)


def _webhook(config: WebhookConfig, notice: Notice, resolve: Resolver) -> None:
    payload = {
        "text": f"{notice.subject}\n{notice.body}",
        "kind": notice.kind,
        "credential": notice.credential_id,
        "tenant": notice.tenant_id,
        "subject": notice.subject,
        "body": notice.body,
        "data": notice.data,
        "id": notice.id,
    }
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Keyturn-Timestamp": timestamp,
        "X-Keyturn-Signature": signature(resolve(config.secret), timestamp, body),
        "X-Keyturn-Notice": str(notice.id),
    }
    try:
        response = httpx.post(config.url, content=body, headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"webhook {config.url}: {exc.__class__.__name__}") from exc
    if response.status_code >= 300:
        raise DeliveryFailed(f"webhook {config.url}: HTTP {response.status_code}")


def _email(config: EmailConfig, notice: Notice, resolve: Resolver) -> None:
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = notice.recipient
    message["Subject"] = notice.subject
    message["X-Keyturn-Notice"] = str(notice.id)
    message.set_content(notice.body + "\n")
    try:
        if config.tls == "implicit":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                config.host, config.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=TIMEOUT)
        with smtp:
            if config.tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if config.username and config.password:
                smtp.login(config.username, resolve(config.password).reveal())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(
            f"e-mail via {config.host}:{config.port}: {exc.__class__.__name__}"
        ) from exc
