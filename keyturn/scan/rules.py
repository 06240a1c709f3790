"""keyturn's own detector: SMTP credentials that generic scanners miss.

Measured on this project's corpus, neither detect-secrets nor CredSweeper reports the password
of a ``.netrc`` or ``.esmtprc`` file, nor ``server.login("user", "password")``. These rules
cover the places SMTP credentials are hard-coded in practice:

- ``netrc``: ``machine HOST login USER password PASS`` in ``.netrc`` / ``_netrc``;
- ``esmtprc`` and ``msmtprc``: ``password "PASS"`` in esmtp's and msmtp's configuration;
- ``smtplib-login``: ``.login("user", "password")`` with two string literals (smtplib,
  imaplib, ftplib: the same call);
- ``django-email-password``: ``EMAIL_HOST_PASSWORD = "..."`` (settings.py, .env files);
- ``rails-smtp-settings``: ``password:`` inside ``smtp_settings`` (Ruby hash or YAML);
- ``postfix-sasl-passwd``: ``[host]:port user:password`` lines of a ``sasl_passwd`` table,
  and ``smtp_sasl_password_maps = static:user:password`` in ``main.cf``.

A value that is a reference (``$VAR``, ``${VAR}``, ``{{ var }}``, ``{var}``, ``%(var)s``, ``<...>``,
``env:``/``file:``/``keyturn:``) or a mask (``****``, ``xxxx``) is not a finding.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import PurePosixPath
from typing import ClassVar

from keyturn.domain.model import Secret
from keyturn.scan.detect import Detection
from keyturn.scan.model import Document

# A quoted string, or a bare word that ends the token (not a call or subscript: `env("X")`)
_QUOTED_OR_WORD = r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s"'#()\[\]{}<>]+(?=[\s#]|\Z))"""
_QUOTED = r"""(?P<value>"[^"\n]+"|'[^'\n]+')"""
_REFERENCE = re.compile(
    r"""^(\$\{?\w+\}?|\{\{.*\}\}|\{[\w.]*\}|%\(\w+\)s|<[^>]*>|(env|file|keyturn):.*|[*xX.]+|ENV\[.*|os\.\w+.*)$"""
)
_MACHINE = re.compile(r"\bmachine\s+(\S+)")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    files: tuple[str, ...] = ()  # file name globs it applies to; () = every file
    kind: str = "smtp"

    def applies(self, path: str) -> bool:
        name = PurePosixPath(path).name.lower()
        return not self.files or any(fnmatch(name, glob) for glob in self.files)


RULES = (
    Rule(
        "netrc",
        re.compile(r"\bpassword\s+" + _QUOTED_OR_WORD),
        ("netrc", ".netrc", "_netrc", "*.netrc"),
    ),
    Rule(
        "esmtprc",
        re.compile(r"^\s*password\s*=?\s*" + _QUOTED_OR_WORD, re.M),
        ("esmtprc", ".esmtprc", "*.esmtprc"),
    ),
    Rule(
        "msmtprc",
        re.compile(r"^\s*password\s+" + _QUOTED_OR_WORD, re.M),
        ("msmtprc", ".msmtprc", "*.msmtprc"),
    ),
    Rule(
        "smtplib-login",
        re.compile(
            r"""\.login\(\s*(?:user\s*=\s*)?(?P<variable>"[^"\n]*"|'[^'\n]*')\s*,\s*"""
            r"(?:password\s*=\s*)?" + _QUOTED + r"\s*[,)]"
        ),
    ),
    Rule(
        "django-email-password",
        re.compile(r"""\b(?P<variable>EMAIL_HOST_PASSWORD)["']?\s*[:=]\s*""" + _QUOTED_OR_WORD),
    ),
    Rule(
        "postfix-sasl-passwd",
        re.compile(r"^[ \t]*[^\s#]+[ \t]+(?P<variable>[^\s:#]+):(?P<value>\S+)[ \t]*$", re.M),
        ("sasl_passwd", "sasl_passwd.*", "*sasl_passwd", "*sasl_passwd.txt"),
    ),
    Rule(
        "postfix-sasl-passwd",
        re.compile(r"\bsmtp_sasl_password_maps\s*=\s*static:(?P<variable>[^:\s]+):(?P<value>\S+)"),
    ),
)
_RAILS_BLOCK = re.compile(r"\bsmtp_settings\b\s*(?:=|:)")
_RAILS_PASSWORD = re.compile(r"""(?::password\s*=>|\bpassword:|["']password["']\s*=>)\s*""")


class Lines:
    """Offsets in a text to 1-based (line, column)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1


def _unquoted(match: re.Match[str]) -> tuple[int, int]:
    start, end = match.span("value")
    if (
        end - start >= 2
        and match.string[start] in "\"'"
        and match.string[end - 1] == match.string[start]
    ):
        return start + 1, end - 1
    return start, end


def _is_reference(value: str) -> bool:
    return not value.strip() or bool(_REFERENCE.match(value))


class KeyturnRules:
    """keyturn's rules for SMTP credentials (see the module docstring)."""

    name: ClassVar[str] = "keyturn"

    def detect(self, documents: Sequence[Document]) -> list[Detection]:
        found: list[Detection] = []
        for number, document in enumerate(documents):
            found.extend(self._detect_one(number, document))
        return found

    def _detect_one(self, number: int, document: Document) -> Iterator[Detection]:
        text = document.data.decode("utf-8", errors="replace")
        lines: Lines | None = None
        for rule, start, end, variable in self._spans(document.path, text):
            value = text[start:end]
            if _is_reference(value):
                continue
            lines = lines or Lines(text)
            line, column = lines.at(start)
            yield Detection(
                number,
                f"keyturn:{rule.name}",
                line,
                column,
                column + (end - start),
                Secret(value),
                variable=variable or self._context(rule, text, start),
                kind=rule.kind,
            )

    def _spans(self, path: str, text: str) -> Iterator[tuple[Rule, int, int, str | None]]:
        for rule in RULES:
            if rule.applies(path):
                for match in rule.pattern.finditer(text):
                    start, end = _unquoted(match)
                    names = match.groupdict()
                    variable = names.get("variable")
                    yield rule, start, end, variable.strip("\"'") if variable else None
        yield from _rails(path, text)

    @staticmethod
    def _context(rule: Rule, text: str, start: int) -> str | None:
        if rule.name == "netrc":
            machines = list(_MACHINE.finditer(text, 0, start))
            return machines[-1].group(1) if machines else None
        return None

    def close(self) -> None:
        return None


RAILS = Rule("rails-smtp-settings", _RAILS_PASSWORD)


def _rails(path: str, text: str) -> Iterator[tuple[Rule, int, int, str | None]]:
    """``password`` inside an ``smtp_settings`` block: up to its closing brace (Ruby) or
    the next line indented no deeper than ``smtp_settings`` itself (YAML)."""
    yaml = path.endswith((".yml", ".yaml"))
    value = re.compile(_QUOTED_OR_WORD if yaml else _QUOTED)
    for block in _RAILS_BLOCK.finditer(text):
        end = _block_end(text, block.start(), block.end(), yaml)
        for key in _RAILS_PASSWORD.finditer(text, block.end(), end):
            match = value.match(text, key.end(), end)
            if match:
                start, stop = _unquoted(match)
                yield RAILS, start, stop, "smtp_settings.password"


def _block_end(text: str, start: int, after: int, yaml: bool) -> int:
    if not yaml:
        close = text.find("}", after)
        return len(text) if close == -1 else close
    line_start = text.rfind("\n", 0, start) + 1
    indent = len(text[line_start:start]) - len(text[line_start:start].lstrip())
    # the next non-empty line that is not indented deeper than the block's own line
    nxt = re.compile(r"\n(?![ \t]{" + str(indent + 1) + r"})(?=[^\n])").search(text, after)
    return nxt.start() if nxt else len(text)
