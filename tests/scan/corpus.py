"""A labelled corpus for `keyturn scan`: files in many languages and formats holding copies of
managed values in every supported encoding, SMTP credentials of the shapes keyturn's own rules
cover, generic credentials (cloud keys, tokens, private keys), look-alikes that must not be
reported (random strings of the values' shapes, references, placeholders), and binary files.

Used by tests/scan and by bench/scan.py (which measures precision and recall on it).
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

# The alphabet of keyturn's "ascii" password rule, plus a space and a non-ASCII letter, so
# every encoding differs from the raw value.
SHAPE = string.ascii_letters + string.digits + string.punctuation + " é"


@dataclass(frozen=True)
class Planted:
    path: str
    line: int
    kind: str  # managed | unmanaged | generic
    label: str  # managed: credential:version:encoding; unmanaged: the rule


@dataclass
class Corpus:
    root: Path
    planted: list[Planted] = field(default_factory=list)
    decoys: int = 0

    def write(self, name: str, lines: list[str]) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")

    def plant(self, name: str, lines: list[str], marks: dict[int, tuple[str, str]]) -> None:
        self.write(name, lines)
        for line, (kind, label) in marks.items():
            self.planted.append(Planted(name, line, kind, label))


def shaped(rng: random.Random, length: int = 28) -> str:
    return "".join(rng.choice(SHAPE) for _ in range(length))


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def managed_lines(value: str, user: str) -> list[tuple[str, str, str]]:
    """(file name, line, encoding) for one value, one per supported encoding and context."""
    j = json.dumps(value)
    return [
        ("app/settings.py", f"SMTP_PASSWORD = {j}", "escaped"),
        ("app/raw.txt", f"password {value}", "raw"),
        (
            "web/config.js",
            f"const url = 'https://api.example.com/?key={quote(value, safe='')}';",
            "url-encoded",
        ),
        ("web/form.txt", f"user={user}&password={quote_plus(value, safe='')}", "form-encoded"),
        (
            "deploy/mail.ini",
            f"url = smtp://{quote(user, safe='')}:{quote(value, safe='')}@mail.example.com:587",
            "url-userinfo",
        ),
        ("deploy/secret.yaml", f"  password: {_b64(value)}", "base64"),
        ("deploy/headers.http", f"Authorization: Basic {_b64(user + ':' + value)}", "base64"),
        ("logs/smtp.log", f"C: AUTH PLAIN {_b64(chr(0) + user + chr(0) + value)}", "base64"),
        (
            "deploy/token.txt",
            f"token={base64.urlsafe_b64encode(value.encode()).decode()}",
            "base64url",
        ),
        ("app/Key.java", f'String keyHex = "{value.encode().hex()}";', "hex"),
        ("app/key.go", f'var keyHex = "{value.encode().hex().upper()}"', "hex"),
    ]


def plant_managed(corpus: Corpus, credential: str, version: int, value: str, user: str) -> None:
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, line, encoding in managed_lines(value, user):
        by_file.setdefault(name, []).append((line, encoding))
    for name, entries in by_file.items():
        path = corpus.root / name
        existing = path.read_text().splitlines() if path.exists() else [f"# {name}"]
        marks = {}
        for line, encoding in entries:
            existing.append(line)
            marks[len(existing)] = ("managed", f"{credential}:{version}:{encoding}")
        corpus.write(name, existing)
        for number, mark in marks.items():
            corpus.planted.append(Planted(name, number, *mark))


SMTP_UNMANAGED = [
    (".netrc", ["machine smtp.example.com", "  login mailer", "  password {v}"], 3, "netrc"),
    (
        ".esmtprc",
        [
            "identity mailer@example.com",
            "  hostname smtp.example.com:587",
            '  username "mailer"',
            '  password "{v}"',
        ],
        4,
        "esmtprc",
    ),
    (
        "notify.py",
        [
            "import smtplib",
            "",
            "server = smtplib.SMTP('smtp.example.com', 587)",
            'server.login("mailer@example.com", "{v}")',
        ],
        4,
        "smtplib-login",
    ),
    (
        "mysite/settings.py",
        [
            'EMAIL_HOST = "smtp.example.com"',
            'EMAIL_HOST_USER = "mailer"',
            'EMAIL_HOST_PASSWORD = "{v}"',
        ],
        3,
        "django-email-password",
    ),
    (
        "config/environments/production.rb",
        [
            "config.action_mailer.smtp_settings = {{",
            '  address: "smtp.example.com",',
            '  user_name: "mailer",',
            '  password: "{v}",',
            "  authentication: :plain",
            "}}",
        ],
        4,
        "rails-smtp-settings",
    ),
    (
        "etc/postfix/sasl_passwd",
        ["[smtp.example.com]:587 mailer@example.com:{v}"],
        1,
        "postfix-sasl-passwd",
    ),
]

GENERIC = [
    (
        "aws/credentials",
        ["[default]", "aws_access_key_id = AKIA{up16}", "aws_secret_access_key = {b40}"],
        (2, 3),
    ),
    ("ci/github.sh", ["export GITHUB_TOKEN=ghp_{alnum36}"], (1,)),
    ("db/database.yml", ["production:", "  adapter: postgresql", "  password: {pw}"], (3,)),
]

NEGATIVE = [
    (
        "safe/settings.py",
        [
            "import os",
            'EMAIL_HOST_PASSWORD = os.environ["EMAIL_HOST_PASSWORD"]',
            'server.login(user, os.environ["SMTP_PASSWORD"])',
        ],
    ),
    ("safe/.netrc", ["machine smtp.example.com login mailer password ${SMTP_PASSWORD}"]),
    (
        "safe/production.rb",
        ["config.action_mailer.smtp_settings = {{", '  password: ENV["SMTP_PASSWORD"],', "}"],
    ),
    ("safe/.env.example", ["EMAIL_HOST_PASSWORD=<your password here>"]),
]


def _fill(template: str, rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    return template.format(
        v="Sm" + "".join(rng.choice(alnum + "-_.") for _ in range(18)),
        up16="".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        b40="".join(rng.choice(alnum + "/+") for _ in range(40)),
        alnum36="".join(rng.choice(alnum) for _ in range(36)),
        pw="Pg" + "".join(rng.choice(alnum) for _ in range(14)) + "!9",
    )


def plant_unmanaged(corpus: Corpus, rng: random.Random, prefix: str = "") -> None:
    for name, lines, line, rule in SMTP_UNMANAGED:
        corpus.plant(prefix + name, [_fill(x, rng) for x in lines], {line: ("unmanaged", rule)})
    for name, lines, numbers in GENERIC:
        marks = {n: ("generic", name) for n in numbers}
        corpus.plant(prefix + name, [_fill(x, rng) for x in lines], marks)
    for name, lines in NEGATIVE:
        corpus.write(prefix + name, lines)


def plant_decoys(corpus: Corpus, rng: random.Random, count: int, length: int = 28) -> None:
    """*count* random strings of the managed values' shape, each in one of the encodings."""
    per_file = 500
    for start in range(0, count, per_file):
        lines = []
        for _ in range(min(per_file, count - start)):
            forms = managed_lines(shaped(rng, length), "mailer@example.com")
            lines.append(rng.choice(forms)[1])
        corpus.write(f"decoys/batch{start // per_file:03}.txt", lines)
    corpus.decoys += count


def plant_binary(corpus: Corpus, value: str) -> None:
    path = corpus.root / "assets" / "logo.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + value.encode() + bytes(range(256)))
