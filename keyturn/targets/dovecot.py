"""Postfix + Dovecot: a Dovecot passwd-file, tested by an SMTP AUTH login through Postfix.

Postfix hands SMTP AUTH to Dovecot SASL, and Dovecot checks the passwd-file(s) keyturn writes
(the ``passwd-file`` target's format and strategies: ``single``, ``alternating``, and ``dual``
with ``secondary_path`` as a second passdb that Dovecot tries after the first). This target
adds what proves a value really works: `test` logs in on the submission port
(``smtp_host``/``smtp_port``) as the mail client will. It first reads the file, so a value the
file does not hold is refused without a failed login on the server.

Dovecot looks at a passwd-file at most once a second, so right after a write it may still
answer from the old contents; `set` and `revoke` wait ``reload_delay`` seconds after changing a
file, and so `test` and every later login see what keyturn wrote.
"""

from __future__ import annotations

import time

from keyturn.domain.model import Secret
from keyturn.targets.base import Account
from keyturn.targets.passwd_file import PasswdFileConfig, PasswdFileTarget
from keyturn.targets.smtp import SmtpSettings


class DovecotConfig(PasswdFileConfig, SmtpSettings):
    """passwd-file settings plus the SMTP endpoint `test` logs in to."""

    # Dovecot re-reads a changed passwd-file at the first lookup in a later second.
    reload_delay: float = 1.1


class DovecotTarget(PasswdFileTarget):
    """Dovecot passwd-file(s) behind Postfix SMTP AUTH."""

    name = "dovecot"
    config_model = DovecotConfig
    config: DovecotConfig

    def _stamps(self) -> list[tuple[int, int] | None]:
        stamps: list[tuple[int, int] | None] = []
        for path in self.files:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_mtime_ns))
        return stamps

    def _settled(self, before: list[tuple[int, int] | None]) -> None:
        if self._stamps() != before:
            time.sleep(self.config.reload_delay)

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        """The passwd-file `set`, then wait until Dovecot sees the change."""
        before = self._stamps()
        super().set(account, new, current)
        self._settled(before)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """The passwd-file `add`, then wait until Dovecot sees the change."""
        before = self._stamps()
        super().add(account, new, current)
        self._settled(before)

    def revoke(self, account: Account, old: Secret) -> None:
        """The passwd-file `revoke`, then wait until Dovecot sees the change."""
        before = self._stamps()
        super().revoke(account, old)
        self._settled(before)

    def ensure(self, account: Account, value: Secret) -> bool:
        before = self._stamps()
        created = super().ensure(account, value)
        self._settled(before)
        return created

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if a file holds *value* for the user and (with smtp_host) SMTP AUTH works."""
        if not super().test(account, value):
            return False
        endpoint = self.config.smtp(self.context.base_dir)
        return True if endpoint is None else endpoint.login(account.username, value, "password")
