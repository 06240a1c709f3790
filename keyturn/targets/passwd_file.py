"""A Dovecot passwd-file as a target: `user:{SHA512-CRYPT}$6$...` lines.

Needs no server, so the tests and the demo use it; real Dovecot reads the same file
(`passdb { driver = passwd-file; args = scheme=SHA512-CRYPT /path }`), which makes it a
real SMTP/IMAP target behind Postfix + Dovecot SASL.

Strategies: `single` (replace the line), `alternating` (two users in the file; revoke
removes the inactive user's line) and `dual` (a second file, `secondary_path`, that Dovecot
tries after the first: the new value goes into whichever file does not hold the current one,
and revoke removes the old). Writes are atomic (temp file, fsync, rename) under a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The handler's own module, imported once: passlib.hash is a lazy proxy whose first use from
# several threads at once can fail with ImportError (a worker runs rotations in threads).
from passlib.handlers.sha2_crypt import sha512_crypt

from keyturn.domain.errors import TargetRejected, TargetUnreachable
from keyturn.domain.model import PasswordRules, Secret
from keyturn.refs import settings_path
from keyturn.targets.base import Account, Target, TargetConfig

SCHEME = "{SHA512-CRYPT}"


class PasswdFileConfig(TargetConfig):
    path: str
    secondary_path: str | None = None
    rounds: int = 5000
    mode: int = 0o640


def _hash(value: Secret, rounds: int) -> str:
    return SCHEME + str(sha512_crypt.using(rounds=rounds).hash(value.reveal()))


def _verify(value: Secret, stored: str) -> bool:
    if not stored.startswith(SCHEME):
        return False
    try:
        return bool(sha512_crypt.verify(value.reveal(), stored[len(SCHEME) :]))
    except ValueError:
        return False


class PasswdFileTarget(Target):
    name = "passwd-file"
    max_active_secrets = 2
    strategies = ("single", "alternating", "dual")
    # ':' ends the password field; whitespace and newlines would break the line format.
    password_rules = PasswordRules(alphabet="urlsafe")
    config_model = PasswdFileConfig
    config: PasswdFileConfig

    def _path(self, text: str) -> Path:
        return settings_path(self.context.base_dir, text)

    @property
    def files(self) -> list[Path]:
        paths = [self._path(self.config.path)]
        if self.config.secondary_path:
            paths.append(self._path(self.config.secondary_path))
        return paths

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.files[0].with_name(self.files[0].name + ".lock")
        for path in self.files:  # a mistyped path is not made: the server reads another file
            if not path.parent.is_dir():
                raise TargetUnreachable(
                    f"passwd-file {path}: the folder {path.parent} does not exist"
                )
        try:
            handle = lock.open("a")
        except OSError as exc:
            raise TargetUnreachable(f"passwd-file {self.files[0]}: {exc.strerror}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _read(self, path: Path) -> dict[str, str]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TargetUnreachable(f"passwd-file {path}: {exc.strerror}") from exc
        entries = {}
        for line in text.splitlines():
            user, sep, rest = line.partition(":")
            if sep:
                entries[user] = rest.split(":", 1)[0]
        return entries

    def _write(self, path: Path, entries: dict[str, str]) -> None:
        body = "".join(f"{user}:{stored}\n" for user, stored in entries.items())
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, self.config.mode)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise TargetUnreachable(f"passwd-file {path}: {exc.strerror}") from exc

    def _holding(self, user: str, value: Secret) -> Path | None:
        for path in self.files:
            stored = self._read(path).get(user)
            if stored and _verify(value, stored):
                return path
        return None

    @staticmethod
    def _check_user(user: str) -> str:
        if not user or any(c in user for c in ":\n\r\t "):
            raise TargetRejected(f"passwd-file: invalid user name {user!r}")
        return user

    # -- verbs -----------------------------------------------------------------------------

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if any of the files holds a hash of *value* for the user."""
        return self._holding(self._check_user(account.username), value) is not None

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """Write the user's line in the file that holds it (the first file if none does)."""
        user = self._check_user(account.username)
        with self._locked():
            if self._holding(user, new) is not None:
                return
            path = next((p for p in self.files if user in self._read(p)), self.files[0])
            self._put(path, user, new)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """``dual`` (with ``secondary_path``): write the file that does not hold *current*,
        so both values work until revoke."""
        user = self._check_user(account.username)
        with self._locked():
            if self._holding(user, new) is not None:
                return
            path = self.files[0]
            if len(self.files) > 1 and current is not None:
                holder = self._holding(user, current)
                path = self.files[1] if holder == self.files[0] else self.files[0]
            self._put(path, user, new)

    def _put(self, path: Path, user: str, value: Secret) -> None:
        entries = self._read(path)
        entries[user] = _hash(value, self.config.rounds)
        self._write(path, entries)

    def revoke(self, account: Account, old: Secret) -> None:
        """Remove the line that accepts *old* (nothing to do if none does)."""
        user = self._check_user(account.username)
        with self._locked():
            path = self._holding(user, old)
            if path is None:
                return
            entries = self._read(path)
            del entries[user]
            self._write(path, entries)

    def ensure(self, account: Account, value: Secret) -> bool:
        user = self._check_user(account.username)
        with self._locked():
            if any(user in self._read(path) for path in self.files):
                return False
            entries = self._read(self.files[0])
            entries[user] = _hash(value, self.config.rounds)
            self._write(self.files[0], entries)
            return True
