"""An application's table with an encrypted column, on SQLite or PostgreSQL."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from keyturn.domain.model import Secret
from keyturn.targets.base import TargetContext
from keyturn.targets.encrypted_column import CODECS, EncryptedColumnTarget


def new_key(fmt: str) -> str:
    material = os.urandom(32)
    if fmt == "fernet":
        return base64.urlsafe_b64encode(material).decode()
    return base64.b64encode(material).decode()


def encrypt(fmt: str, key: str, plain: str, binary: bool) -> str | bytes:
    if fmt == "fernet":
        token = Fernet(key.encode()).encrypt(plain.encode())
        return token if binary else token.decode()
    nonce = os.urandom(12)
    raw = nonce + AESGCM(base64.b64decode(key)).encrypt(nonce, plain.encode(), None)
    return raw if binary else base64.b64encode(raw).decode()


def decrypt(fmt: str, key: str, stored: str | bytes) -> str | None:
    codec = CODECS[fmt](Secret(key))
    plain = codec.decrypt(stored)
    return None if plain is None else plain.decode()


@dataclass
class AppTable:
    url: str
    fmt: str
    binary: bool = False
    table: str = "totp_secrets"

    @property
    def engine(self) -> Engine:
        return create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))

    def create(self, key: str, rows: int) -> dict[int, str]:
        """*rows* rows encrypted with *key*; returns id -> plaintext."""
        column_type = ("BYTEA" if "postgresql" in self.url else "BLOB") if self.binary else "TEXT"
        plain = {i: f"JBSWY3DPEHPK3PXP-{i:05d}" for i in range(1, rows + 1)}
        engine = self.engine
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {self.table}"))
            conn.execute(
                text(f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, secret {column_type})")
            )
            conn.execute(
                text(f"INSERT INTO {self.table} (id, secret) VALUES (:id, :v)"),
                [{"id": i, "v": encrypt(self.fmt, key, p, self.binary)} for i, p in plain.items()],
            )
        engine.dispose()
        return plain

    def rows(self) -> dict[int, str | bytes]:
        engine = self.engine
        with engine.connect() as conn:
            out = {r[0]: r[1] for r in conn.execute(text(f"SELECT id, secret FROM {self.table}"))}
        engine.dispose()
        return out

    def decrypted(self, key: str) -> dict[int, str | None]:
        return {i: decrypt(self.fmt, key, v) for i, v in self.rows().items()}

    def target(self, **settings: object) -> EncryptedColumnTarget:
        config = {
            "url": self.url,
            "table": self.table,
            "value_column": "secret",
            "format": self.fmt,
            **settings,
        }
        target = EncryptedColumnTarget.from_settings(
            config, TargetContext(resolve=lambda ref: Secret(os.environ[ref[4:]]))
        )
        assert isinstance(target, EncryptedColumnTarget)
        return target
