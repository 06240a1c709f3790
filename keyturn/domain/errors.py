"""keyturn's errors: one root, each class's docstring is its default message.

    KeyturnError
    ├── UsageError                 bad input from a person (ids, flags, files)
    │   ├── InvalidId
    │   ├── ConfigInvalid
    │   │   ├── LiteralSecret
    │   │   └── PolicyInvalid
    │   └── ReferenceUnresolved
    ├── NotFound
    │   ├── CredentialNotFound
    │   └── TargetNotFound         no such target, or not granted to the caller's tenant
    ├── Conflict
    │   ├── RotationInProgress
    │   └── AccountTaken           the account on the target belongs to another credential
    ├── Forbidden
    ├── CryptoError
    │   └── WrongMasterKey
    ├── AuditHeadMissing           the audit log cannot be appended to: its head is gone
    ├── StoreUnavailable           keyturn's own database cannot be reached
    ├── PluginError
    │   ├── PluginMissing           an extra is not installed, or no plugin has that name
    │   ├── TargetError
    │   │   ├── TargetRejected      the target refused the operation or the credential
    │   │   └── TargetUnreachable   the target could not be reached
    │   │       └── TargetRateLimited   the target asks keyturn to wait (retry_after)
    │   └── PublishFailed
    └── RotationFailed

No message of any of them ever contains a secret value: callers pass ids, names and driver
error *classes*, never values.
"""

from __future__ import annotations

from datetime import timedelta


class KeyturnError(Exception):
    """keyturn failed."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(KeyturnError):
    """The input is not valid."""

    code = "invalid"


class InvalidId(UsageError):
    """The id is not valid: use [a-z0-9._-] segments joined by '/', at most 200 characters."""

    code = "invalid_id"


class ConfigInvalid(UsageError):
    """The configuration is not valid."""

    code = "config_invalid"


class LiteralSecret(ConfigInvalid):
    """A secret is written literally; reference it instead (env:NAME, file:PATH, keyturn:ID)."""

    code = "literal_secret"


class PolicyInvalid(ConfigInvalid):
    """The policy is not valid."""

    code = "policy_invalid"


class ReferenceUnresolved(UsageError):
    """A secret reference could not be resolved."""

    code = "reference_unresolved"


class NotFound(KeyturnError):
    """Not found."""

    code = "not_found"


class CredentialNotFound(NotFound):
    """No such credential."""

    code = "credential_not_found"


class TargetNotFound(NotFound):
    """No such target."""

    code = "target_not_found"


class Conflict(KeyturnError):
    """The operation conflicts with the current state."""

    code = "conflict"


class RotationInProgress(Conflict):
    """A rotation of this credential is already in progress."""

    code = "rotation_in_progress"


class AccountTaken(Conflict):
    """The account on the target belongs to another credential."""

    code = "account_taken"


class Forbidden(KeyturnError):
    """Insufficient permissions."""

    code = "forbidden"


class CryptoError(KeyturnError):
    """A value could not be decrypted."""

    code = "crypto_error"


class WrongMasterKey(CryptoError):
    """The master key does not match the one that encrypted this database; set
    KEYTURN_MASTER_KEY (or KEYTURN_MASTER_KEY_FILE) to the right key, or, after a key change,
    set KEYTURN_OLD_MASTER_KEY to the previous key and run `keyturn rekey`."""

    code = "wrong_master_key"


class AuditHeadMissing(KeyturnError):
    """The audit log's head row is missing, so no entry can be chained to it: the database was
    tampered with or damaged. Run `keyturn audit verify`, then restore the database from a
    backup, or, if the log is otherwise intact, `keyturn audit restore-head --reason TEXT`."""

    code = "audit_head_missing"


class StoreUnavailable(KeyturnError):
    """keyturn's database cannot be reached."""

    code = "database_unavailable"


class PluginError(KeyturnError):
    """A plugin failed."""

    code = "plugin_error"


class PluginMissing(PluginError):
    """No plugin of that name is installed."""

    code = "plugin_missing"


class TargetError(PluginError):
    """The target failed."""

    code = "target_error"


class TargetRejected(TargetError):
    """The target rejected the operation."""

    code = "target_rejected"


class TargetUnreachable(TargetError):
    """The target cannot be reached."""

    code = "target_unreachable"


class TargetRateLimited(TargetUnreachable):
    """The target rate-limited keyturn; retry later."""

    code = "target_rate_limited"

    def __init__(self, message: str | None = None, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        # The least time to wait before the next attempt (the engine backs off at least this).
        self.retry_after = retry_after or timedelta(0)


class PublishFailed(PluginError):
    """Publishing to a store failed."""

    code = "publish_failed"


class RotationFailed(KeyturnError):
    """The rotation failed."""

    code = "rotation_failed"
