"""HashiCorp Vault and OpenBao KV v2 as a store, through hvac.

Each credential is one KV v2 secret at a path template (`secret/{tenant}/{name}`: the first
segment is the mount unless `mount` is set). Its data holds the current value under `key`
(and the previous one under `previous_key`, when the strategy keeps one); its
`custom_metadata` holds keyturn's version number, state and fingerprint, never a value.

Every write is a check-and-set with the KV version keyturn last wrote (its *mark*), so a
value changed behind keyturn's back is detected (:class:`StoreConflict`) and never
overwritten. A replayed publish finds its own value already there and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import field_validator, model_validator

from keyturn.domain.errors import PluginMissing
from keyturn.domain.model import Secret
from keyturn.stores.base import (
    Found,
    Held,
    Published,
    PublishView,
    Store,
    StoreConfig,
    StoreConflict,
    StoreRefused,
    StoreUnreachable,
    reference,
)
from keyturn.targets.base import redact


class VaultConfig(StoreConfig):
    url: str
    path: str = "secret/{tenant}/{name}"
    mount: str = ""
    key: str = "value"
    # The field of the previous value ("" to leave it out).
    previous_key: str = "previous"
    token: str | None = None
    role_id: str | None = None
    secret_id: str | None = None
    approle_mount: str = "approle"
    namespace: str | None = None
    ca_bundle: str | None = None
    max_versions: int | None = None
    timeout: float = 10.0

    @field_validator("token", "secret_id")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return reference(value, "vault store", "token/secret_id")

    @model_validator(mode="after")
    def _auth(self) -> VaultConfig:
        if (self.token is None) == (self.role_id is None):
            raise ValueError('give either token = "env:..." or role_id and secret_id (AppRole)')
        if self.role_id is not None and self.secret_id is None:
            raise ValueError("AppRole needs secret_id (a reference) beside role_id")
        return self


def _hvac() -> Any:
    try:
        import hvac
    except ImportError as exc:
        raise PluginMissing("the vault store needs hvac: pip install 'keyturn[vault]'") from exc
    return hvac


class VaultStore(Store):
    """Publishes to KV v2; see the module docstring."""

    name = "vault"
    config_model = VaultConfig
    config: VaultConfig
    _client: Any = None

    # -- plumbing --------------------------------------------------------------------------

    def _where(self, credential_id: str, tenant: str) -> tuple[str, str]:
        """(mount, path inside the mount) of a credential's secret."""
        head, _, rest = credential_id.partition("/")
        name = rest if head == tenant and rest else credential_id
        full = self.config.path.format(id=credential_id, tenant=tenant, name=name).strip("/")
        if self.config.mount:
            return self.config.mount.strip("/"), full
        mount, _, path = full.partition("/")
        return mount, path

    def client(self) -> Any:
        if self._client is None:
            hvac = _hvac()
            verify: str | bool = True
            if self.config.ca_bundle:
                verify = self.context.path(self.config.ca_bundle)
            client = hvac.Client(
                url=self.config.url,
                namespace=self.config.namespace,
                verify=verify,
                timeout=self.config.timeout,
            )
            with self._errors("log in"):
                if self.config.token is not None:
                    client.token = self.context.resolve(self.config.token).reveal()
                else:
                    assert self.config.secret_id is not None
                    client.auth.approle.login(
                        role_id=self.config.role_id,
                        secret_id=self.context.resolve(self.config.secret_id).reveal(),
                        mount_point=self.config.approle_mount,
                    )
            self._client = client
        return self._client

    def _errors(self, doing: str, *values: Secret | None) -> _Mapped:
        return _Mapped(self, doing, values)

    def _kv(self) -> Any:
        return self.client().secrets.kv.v2

    def _metadata(self, mount: str, path: str) -> dict[str, Any] | None:
        hvac = _hvac()
        with self._errors(f"read the metadata of {mount}/{path}"):
            try:
                return self._kv().read_secret_metadata(path=path, mount_point=mount)["data"]  # type: ignore[no-any-return]
            except hvac.exceptions.InvalidPath:
                return None

    def _data(self, mount: str, path: str, version: int | None = None) -> dict[str, Any] | None:
        hvac = _hvac()
        with self._errors(f"read {mount}/{path}"):
            try:
                found = self._kv().read_secret_version(
                    path=path, mount_point=mount, version=version, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
        return found["data"]["data"] or {}

    # -- verbs -----------------------------------------------------------------------------

    def publish(self, view: PublishView, mark: str | None) -> str | None:
        """Check-and-set the current value; a replay changes nothing; drift is refused."""
        mount, path = self._where(view.credential_id, view.tenant)
        meta = self._metadata(mount, path)
        remote = int(meta["current_version"]) if meta else 0
        custom = (meta or {}).get("custom_metadata") or {}
        if str(remote) == mark and custom.get("keyturn_fingerprint") == view.current.fingerprint:
            return mark  # keyturn wrote this very version last: a replay
        if meta and str(remote) != mark:
            data = self._data(mount, path) or {}
            held = data.get(self.config.key)
            if held == view.current.value.reveal():
                self._label(mount, path, view)  # a replay after a crash
                return str(remote)
            known = {n.value.reveal() for n in (view.previous,) if n is not None}
            if mark is not None or held not in known:
                raise StoreConflict(
                    f"{self.context.name or 'vault'}: {mount}/{path} holds KV version {remote}, "
                    f"not {mark or 'one keyturn wrote'}: someone else wrote it; keyturn does not "
                    "overwrite it. Check who did, then run `keyturn verify --repair "
                    f"{view.credential_id}` to publish keyturn's current value over it"
                )
        return self._write(mount, path, view, remote)

    def _write(self, mount: str, path: str, view: PublishView, cas: int) -> str:
        hvac = _hvac()
        data = {self.config.key: view.current.value.reveal()}
        if view.previous is not None and self.config.previous_key:
            data[self.config.previous_key] = view.previous.value.reveal()
        values = (view.current.value, view.previous.value if view.previous else None)
        with self._errors(f"write {mount}/{path}", *values):
            try:
                written = self._kv().create_or_update_secret(
                    path=path, secret=data, cas=cas, mount_point=mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                raise StoreConflict(
                    f"{mount}/{path} changed while keyturn wrote it (check-and-set with KV "
                    f"version {cas} refused); keyturn retries after reading it again"
                ) from exc
        self._label(mount, path, view)
        return str(written["data"]["version"])

    def _label(self, mount: str, path: str, view: PublishView) -> None:
        metadata = {
            "keyturn_credential": view.credential_id,
            "keyturn_version": str(view.current.number),
            "keyturn_state": "current",
            "keyturn_fingerprint": view.current.fingerprint,
        }
        if view.previous is not None:
            metadata["keyturn_previous_version"] = str(view.previous.number)
        body: dict[str, Any] = {"custom_metadata": metadata}
        if self.config.max_versions is not None:
            body["max_versions"] = self.config.max_versions
        with self._errors(f"label {mount}/{path}"):
            # A plain POST sets only the fields it names (hvac's update_metadata would also
            # reset delete_version_after, a setting that belongs to the secret's owner).
            self.client().adapter.post(f"/v1/{mount}/metadata/{path}", json=body)

    def held(self, credential_id: str, tenant: str) -> Held | None:
        """The version named by the metadata, and the KV version now current (the mark)."""
        mount, path = self._where(credential_id, tenant)
        meta = self._metadata(mount, path)
        if not meta:
            return None
        custom = meta.get("custom_metadata") or {}
        number = custom.get("keyturn_version", "")
        if not number.isdigit():  # not labelled by keyturn (imported): compare the value
            data = self._data(mount, path) or {}
            value = data.get(self.config.key)
            found = Secret(value) if isinstance(value, str) else None
            return Held(None, mark=str(meta["current_version"]), value=found)
        return Held(
            int(number) if number.isdigit() else None,
            fingerprint=custom.get("keyturn_fingerprint"),
            mark=str(meta["current_version"]),
        )

    def read(self, credential_id: str) -> tuple[Published, Secret] | None:
        tenant = credential_id.partition("/")[0]
        mount, path = self._where(credential_id, tenant)
        data = self._data(mount, path)
        if not data or self.config.key not in data:
            return None
        held = self.held(credential_id, tenant)
        return Published(held.version if held else None), Secret(str(data[self.config.key]))

    def scan(self, prefix: str) -> Iterator[Found]:
        """Every secret under *prefix* (`secret/acme`: mount, then a folder), recursively."""
        mount, _, folder = prefix.strip("/").partition("/")
        if self.config.mount:
            mount, folder = self.config.mount.strip("/"), prefix.strip("/")
        yield from self._walk(mount, folder)

    def _walk(self, mount: str, folder: str) -> Iterator[Found]:
        hvac = _hvac()
        with self._errors(f"list {mount}/{folder}"):
            try:
                keys = self._kv().list_secrets(path=folder, mount_point=mount)["data"]["keys"]
            except hvac.exceptions.InvalidPath:
                keys = []
        for key in sorted(keys):
            path = f"{folder}/{key}".strip("/") if folder else key
            if key.endswith("/"):
                yield from self._walk(mount, path.rstrip("/"))
                continue
            data = self._data(mount, path) or {}
            value = data.get(self.config.key)
            if value is None and len(data) == 1:
                value = next(iter(data.values()))
            if isinstance(value, str):
                yield Found(f"{mount}/{path}", Secret(value))

    def close(self) -> None:
        if self._client is not None:
            self._client.adapter.close()
            self._client = None


class _Mapped:
    """Maps hvac and requests errors to keyturn's, once, without any value in the message."""

    def __init__(self, store: VaultStore, doing: str, values: tuple[Secret | None, ...]) -> None:
        self.store, self.doing, self.values = store, doing, values

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, StoreConflict | StoreRefused | StoreUnreachable):
            return False
        hvac = _hvac()
        import requests

        where = f"{self.store.context.name or 'vault'} ({self.store.config.url})"
        errors = " ".join(getattr(exc, "errors", None) or [])
        why = redact(errors or type(exc).__name__, self.values)
        if isinstance(exc, requests.exceptions.RequestException):
            raise StoreUnreachable(f"{where}: cannot {self.doing}: {type(exc).__name__}") from exc
        down = (
            hvac.exceptions.VaultDown,
            hvac.exceptions.BadGateway,
            hvac.exceptions.InternalServerError,
            hvac.exceptions.RateLimitExceeded,
        )
        if isinstance(exc, down):
            raise StoreUnreachable(f"{where}: cannot {self.doing}: {why}") from exc
        if isinstance(exc, hvac.exceptions.VaultError):
            raise StoreRefused(f"{where}: cannot {self.doing}: {why}") from exc
        return False
