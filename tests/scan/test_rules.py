"""keyturn's own rules: what CredSweeper misses in SMTP configurations, and what they leave."""

# ruff: noqa: E501  (the tables of cases read best one case a line)
from __future__ import annotations

import logging

import pytest

from keyturn.scan.credsweeper import CredSweeperDetector, kind_of
from keyturn.scan.model import Document
from keyturn.scan.rules import KeyturnRules

PW = "Sm-9xQ2.vL7_kR4zT8w"

FOUND = [
    (".netrc", f"machine smtp.example.com\n  login mailer\n  password {PW}\n", "netrc", 3, "smtp.example.com"),
    ("home/.netrc", f"machine a login b password {PW}\n", "netrc", 1, "a"),
    (".esmtprc", f'identity m@example.com\n  hostname smtp.example.com:587\n  password "{PW}"\n', "esmtprc", 3, None),
    (".esmtprc", f"identity m@example.com\n  password = {PW}\n", "esmtprc", 2, None),
    (".msmtprc", f"account default\nhost smtp.example.com\npassword {PW}\n", "msmtprc", 3, None),
    ("notify.py", f'import smtplib\ns = smtplib.SMTP("h")\ns.login("mailer@example.com", "{PW}")\n', "smtplib-login", 3, "mailer@example.com"),
    ("n.py", f"server.login(user='m', password='{PW}')\n", "smtplib-login", 1, "m"),
    ("mysite/settings.py", f'EMAIL_HOST_PASSWORD = "{PW}"\n', "django-email-password", 1, "EMAIL_HOST_PASSWORD"),
    (".env", f"EMAIL_HOST_PASSWORD={PW}\n", "django-email-password", 1, "EMAIL_HOST_PASSWORD"),
    ("config/environments/production.rb", f'config.action_mailer.smtp_settings = {{\n  address: "smtp.example.com",\n  password: "{PW}",\n}}\n', "rails-smtp-settings", 3, "smtp_settings.password"),
    ("production.rb", f'ActionMailer::Base.smtp_settings = {{ :user_name => "m", :password => "{PW}" }}\n', "rails-smtp-settings", 1, "smtp_settings.password"),
    ("config/mail.yml", f"production:\n  smtp_settings:\n    address: smtp.example.com\n    password: {PW}\n", "rails-smtp-settings", 4, "smtp_settings.password"),
    ("etc/postfix/sasl_passwd", f"# relay\n[smtp.example.com]:587 mailer@example.com:{PW}\n", "postfix-sasl-passwd", 2, "mailer@example.com"),
    ("etc/postfix/main.cf", f"relayhost = [smtp.example.com]:587\nsmtp_sasl_password_maps = static:mailer:{PW}\n", "postfix-sasl-passwd", 2, "mailer"),
]  # fmt: skip

LEFT = [
    (".netrc", "machine smtp.example.com login mailer password ${SMTP_PASSWORD}\n"),
    ("n.py", 'server.login(user, os.environ["SMTP_PASSWORD"])\n'),
    ("n.py", 'server.login("mailer", password)\n'),
    ("settings.py", 'EMAIL_HOST_PASSWORD = os.environ["EMAIL_HOST_PASSWORD"]\n'),
    ("settings.py", 'EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")\n'),
    (".env.example", "EMAIL_HOST_PASSWORD=<your password>\n"),
    ("template.py", 'TEMPLATE = \'EMAIL_HOST_PASSWORD = "{password}"\'\n'),
    ("production.rb", 'config.action_mailer.smtp_settings = {\n  password: ENV["SMTP_PASSWORD"],\n}\n'),
    ("production.rb", 'config.action_mailer.smtp_settings = { address: "h" }\nuser.update(password: "not-smtp-9xQ2vL7")\n'),
    ("mail.yml", "production:\n  smtp_settings:\n    address: h\n  database:\n    password: notsmtp-9xQ2vL7kR\n"),
    ("README.md", "Set a password of at least 12 characters.\n"),
    ("docs/netrc.md", f"machine a login b password {PW}\n"),  # .netrc syntax outside a netrc file
    ("etc/postfix/sasl_passwd", "# [smtp.example.com]:587 user:password\n"),
]  # fmt: skip


@pytest.mark.parametrize("path, text, rule, line, variable", FOUND)
def test_rule_finds(path: str, text: str, rule: str, line: int, variable: str | None) -> None:
    [found] = KeyturnRules().detect([Document(path, text.encode())])
    assert (found.rule, found.line, found.variable) == (f"keyturn:{rule}", line, variable)
    assert found.value.reveal() == PW
    row = text.splitlines()[line - 1]
    assert row[found.column - 1 : found.end_column - 1] == PW


@pytest.mark.parametrize("path, text", LEFT)
def test_rule_leaves_references_and_lookalikes(path: str, text: str) -> None:
    assert KeyturnRules().detect([Document(path, text.encode())]) == []


def test_credsweeper_misses_what_keyturn_rules_find() -> None:
    """The research fact that justifies the rules, kept true: CredSweeper alone reports none
    of the netrc, esmtprc, msmtprc, positional login(), .env and Postfix cases (it does find
    the keyword login(), Django's settings.py and Rails'; the rules find them all)."""
    missed = {0, 1, 2, 3, 4, 5, 8, 12, 13}
    documents = [Document(path, text.encode()) for path, text, *_ in FOUND]
    found = {d.document for d in CredSweeperDetector().detect(documents)}
    assert not found & missed
    assert found  # and it did run


def test_credsweeper_detections_and_silent_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = "ghp_" + "Zq8Lm3Xv9Tb2Nc7Rw4Yp1Hs6Kd5Fg0Ja2Ue"
    binary = Document("blob.bin", b"\xff\xfe\x00" + token.encode() + bytes(range(256)))
    text = f'GITHUB_TOKEN = "{token}"\n'
    with caplog.at_level(logging.DEBUG):
        found = CredSweeperDetector().detect([binary, Document("ci/env.py", text.encode())])
    hits = [d for d in found if d.document == 1 and d.value.reveal() == token]
    assert hits and hits[0].line == 1
    assert text[hits[0].column - 1 : hits[0].end_column - 1] == token
    assert token not in caplog.text


@pytest.mark.parametrize(
    "rule, kind",
    [("AWS Client ID", "aws-access-key"), ("Password", "password"), ("Slack Token", "api-key")],
)
def test_credsweeper_kinds(rule: str, kind: str) -> None:
    assert kind_of(rule) == kind
