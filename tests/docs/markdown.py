"""Doc examples as tests: a Markdown page becomes one bash script (CONTRIBUTING.md, "Doc
examples are tests").

- ` ```sh ` (or `bash`, `shell`) blocks run in order, in one bash session
  (`set -euo pipefail`), in a fresh folder;
- ` ```console ` blocks: the lines after `$ ` run (a line ending in `\\` continues on the
  next); the lines below a command are what it prints, checked by `match` (a line `...`
  stands for any lines, `...` inside a line for any text); a command shown printing an
  `error:` line must fail, every other command must succeed;
- `<!-- file: NAME -->` on the line before a block writes the block to NAME instead;
- `<!-- doc-test: skip REASON -->` on the line before a block leaves it out;
- `<!-- doc-test: background -->` on the line before a sh block runs it in the background
  (a server); it is stopped when the page ends;
- `<!-- doc-test: setup` ... `-->` holds shell lines run before the first block,
  `<!-- doc-test: run` ... `-->` hidden shell lines run where they stand (a wait, a check,
  unique names on a shared server), and `<!-- doc-test: cleanup` ... `-->` lines run when
  the page ends, passed or failed (drop what the page made on a shared server).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

RUN_LANGUAGES = {"sh", "bash", "shell"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<body>(file|doc-test):.*?)\s*-->\s*$")
HIDDEN = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<kind>setup|run|cleanup)\s*$")


@dataclass
class Command:
    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def must_fail(self) -> bool:
        return any(line.lstrip().startswith("error:") for line in self.expected)


@dataclass
class Block:
    """One step of a page: shell lines, a console session or a file to write."""

    line: int  # where it starts in the page (1-based), for messages
    kind: str  # sh | console | file | background
    text: str = ""
    name: str = ""  # file blocks: where to write
    commands: list[Command] = field(default_factory=list)


@dataclass
class Page:
    setup: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def runs_anything(self) -> bool:
        return any(b.kind != "file" for b in self.blocks)


def parse(text: str) -> Page:
    page = Page()
    lines = text.splitlines()
    i, directive = 0, ""
    while i < len(lines):
        line = lines[i]
        hidden = HIDDEN.match(line)
        if hidden:
            body, i = _until_comment_end(lines, i + 1)
            if hidden["kind"] == "setup":
                page.setup += body
            elif hidden["kind"] == "cleanup":
                page.cleanup += body
            else:
                page.blocks.append(Block(i, "sh", "\n".join(body)))
            directive = ""
            continue
        fence = FENCE.match(line)
        if fence:
            body, end = _until_fence(lines, i + 1, fence["indent"], fence["fence"])
            _add_block(page, i + 1, fence["lang"].lower(), body, directive)
            i, directive = end + 1, ""
            continue
        found = DIRECTIVE.match(line)
        if found:
            directive = found["body"]
        elif line.strip():
            directive = ""
        i += 1
    return page


def _until_comment_end(lines: list[str], start: int) -> tuple[list[str], int]:
    for end in range(start, len(lines)):
        if lines[end].strip() == "-->":
            return lines[start:end], end + 1
    raise ValueError(f"line {start}: <!-- doc-test: ... is never closed by a line `-->`")


def _until_fence(lines: list[str], start: int, indent: str, fence: str) -> tuple[list[str], int]:
    for end in range(start, len(lines)):
        if lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == "":
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:end]]
            return body, end
    raise ValueError(f"line {start}: a code block is never closed")


def _add_block(page: Page, line: int, lang: str, body: list[str], directive: str) -> None:
    if directive.startswith("doc-test:"):
        words = directive.removeprefix("doc-test:").strip()
        if words.startswith("skip"):
            page.skipped.append((line, words.removeprefix("skip").strip()))
            return
        if words == "background" and lang in RUN_LANGUAGES:
            page.blocks.append(Block(line, "background", "\n".join(body)))
            return
        raise ValueError(f"line {line}: unknown directive <!-- {directive} -->")
    if directive.startswith("file:"):
        name = directive.removeprefix("file:").strip()
        path = PurePosixPath(name)
        if not name or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"line {line}: <!-- file: {name} --> must be a relative path")
        page.blocks.append(Block(line, "file", "\n".join(body) + "\n", name=name))
    elif lang in RUN_LANGUAGES:
        page.blocks.append(Block(line, "sh", "\n".join(body)))
    elif lang == "console":
        page.blocks.append(Block(line, "console", commands=_commands(body)))


def _commands(body: list[str]) -> list[Command]:
    commands: list[Command] = []
    continuing = False
    for raw in body:
        if continuing:
            commands[-1].text += "\n" + raw
        elif raw.startswith("$ "):
            commands.append(Command(raw[2:]))
        elif commands:
            commands[-1].expected.append(raw.rstrip())
        continuing = raw.endswith("\\") and (continuing or raw.startswith("$ "))
    return commands


# -- output ---------------------------------------------------------------------------------


def _line_pattern(shown: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in shown.strip().split("...")]
    return re.compile(r"\s*" + ".*".join(parts) + r"\s*")


def match(shown: list[str], printed: list[str]) -> str | None:
    """None if the *shown* lines appear, in order and one after the other, in *printed*
    (a line `...` stands for any number of lines, `...` in a line for any text); else the
    first shown line that could not be found."""
    wanted = [s for s in shown if s.strip()]
    if not wanted:
        return None
    lines = [p.rstrip() for p in printed]
    for start in range(len(lines) + 1):
        if _match_from(wanted, lines, start):
            return None
    return next((w for w in wanted if w.strip() != "..."), wanted[0])


def _match_from(wanted: list[str], lines: list[str], start: int) -> bool:
    if not wanted:
        return True
    head, rest = wanted[0], wanted[1:]
    if head.strip() == "...":
        return any(_match_from(rest, lines, k) for k in range(start, len(lines) + 1))
    if start < len(lines) and _line_pattern(head).fullmatch(lines[start]):
        return _match_from(rest, lines, start + 1)
    return False


# -- the script -----------------------------------------------------------------------------

PRELUDE = """\
set -euo pipefail
__doc_at=start
__doc_exit() {
    set +eu
    kill $(jobs -p) 2>/dev/null
    __doc_cleanup
    return 0
}
trap 'echo "doc-test: failed at $__doc_at: $BASH_COMMAND" >&2' ERR
trap __doc_exit EXIT
"""


def script(page: Page, source: str, outputs: str) -> str:
    """The bash script that runs *page*; console output goes to files under *outputs*
    (OUTPUT/<block line>.<n>, its exit status in .rc) for the caller to check."""
    cleanup = "\n".join(page.cleanup) or ":"
    out = [PRELUDE, f"__doc_cleanup() {{\n{cleanup}\n}}", f"__doc_out={shlex.quote(outputs)}"]
    out += page.setup
    for block in page.blocks:
        out.append(f"__doc_at={shlex.quote(f'{source}:{block.line}')}")
        if block.kind == "sh":
            out.append(block.text)
        elif block.kind == "background":
            log = f'"$__doc_out/{block.line}.background"'
            out.append(f"(\n{block.text}\n) >{log} 2>&1 &")
        elif block.kind == "file":
            name = shlex.quote(block.name)
            out.append(f'mkdir -p "$(dirname {name})"')
            out.append(f"cat > {name} <<'__DOC_TEST_EOF__'\n{block.text}__DOC_TEST_EOF__")
        else:
            for n, command in enumerate(block.commands):
                out.append(_console(command, f'"$__doc_out/{block.line}.{n}"'))
    return "\n".join(out) + "\n"


def _console(command: Command, log: str) -> str:
    run = f"__doc_rc=0\n{{ {command.text}\n}} >{log} 2>&1 || __doc_rc=$?\necho $__doc_rc >{log}.rc"
    if command.must_fail:
        check = (
            'if [ "$__doc_rc" = 0 ]; then echo "doc-test: $__doc_at: the command shown '
            'printing error: succeeded" >&2; exit 1; fi'
        )
    else:
        check = f'if [ "$__doc_rc" != 0 ]; then cat {log} >&2; exit "$__doc_rc"; fi'
    return f"{run}\n{check}"
