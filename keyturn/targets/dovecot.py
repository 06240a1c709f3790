"""Postfix + Dovecot: a Dovecot passwd-file, tested by an SMTP AUTH login through Postfix.

Postfix hands SMTP AUTH to Dovecot SASL, and Dovecot checks the passwd-file(s) keyturn writes
(the ``passwd-file`` target's format and strategies: ``single``, ``alternating``, and ``dual``
with ``secondary_path`` as a second passdb that Dovecot tries after the first). This target
adds what proves a value really works: `test` logs in on the submission port
(``smtp_host``/``smtp_port``) as the mail client will. It first reads the file, so a value the
file does not hold is refused without a failed login on the server.
"""

from __future__ import annotations

from keyturn.domain.model import Secret
from keyturn.targets.base import Account
from keyturn.targets.passwd_file import PasswdFileConfig, PasswdFileTarget
from keyturn.targets.smtp import SmtpSettings


class DovecotConfig(PasswdFileConfig, SmtpSettings):
    """passwd-file settings plus the SMTP endpoint `test` logs in to."""


class DovecotTarget(PasswdFileTarget):
    """Dovecot passwd-file(s) behind Postfix SMTP AUTH."""

    name = "dovecot"
    config_model = DovecotConfig
    config: DovecotConfig

    def test(self, account: Account, value: Secret) -> bool:
        """Accepted if a file holds *value* for the user and (with smtp_host) SMTP AUTH works."""
        if not super().test(account, value):
            return False
        endpoint = self.config.smtp()
        return True if endpoint is None else endpoint.login(account.username, value, "password")
