"""The doc runner's own rules (CONTRIBUTING.md, "Doc examples are tests"), on small pages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.docs import markdown

PAGE = """\
# A page

<!-- doc-test: setup
export GREETING=hello
-->

<!-- file: conf/app.toml -->
```toml
name = "x"
```

```sh
echo "$GREETING" > made.txt
```

<!-- doc-test: skip a production host -->
```sh
ssh prod.example rm -rf /
```

```console
$ cat made.txt
hello
$ cat conf/app.toml; false
error: never printed
```

```python
print("not run: no directive")
```

<!-- doc-test: run
test -f made.txt
-->
<!-- doc-test: cleanup
rm -f made.txt
-->
"""


def test_parse_finds_blocks_directives_and_hidden_lines() -> None:
    page = markdown.parse(PAGE)
    assert page.setup == ["export GREETING=hello"]
    assert page.cleanup == ["rm -f made.txt"]
    assert [b.kind for b in page.blocks] == ["file", "sh", "console", "sh"]
    assert page.blocks[0].name == "conf/app.toml" and page.blocks[0].text == 'name = "x"\n'
    assert page.skipped == [(17, "a production host")]
    first, second = page.blocks[2].commands
    assert first.text == "cat made.txt" and first.expected == ["hello"] and not first.must_fail
    assert second.must_fail


def _run(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir()
    script = markdown.script(markdown.parse(text), "page.md", str(out))
    return subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )


def test_a_page_runs_as_one_session_and_cleans_up(tmp_path: Path) -> None:
    done = _run(PAGE, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "made.txt").exists()  # cleanup ran
    assert (tmp_path / "conf" / "app.toml").exists()
    assert (tmp_path / "out" / "21.0").read_text() == "hello\n"


def test_a_failing_block_names_its_line(tmp_path: Path) -> None:
    done = _run("text\n\n```sh\ntrue\nfalse\n```\n", tmp_path)
    assert done.returncode == 1 and "failed at page.md:3: false" in done.stderr


def test_a_command_shown_with_an_error_must_fail(tmp_path: Path) -> None:
    done = _run("```console\n$ true\nerror: it broke\n```\n", tmp_path)
    assert done.returncode == 1 and "succeeded" in done.stderr


@pytest.mark.parametrize(
    ("shown", "printed", "ok"),
    [
        (["a", "b"], ["x", "a", "b", "y"], True),
        (["a", "b"], ["a", "x", "b"], False),
        (["a", "...", "b"], ["a", "x", "y", "b"], True),
        (["token: kt_..."], ["token: kt_abc123  "], True),
        (["token: kt_..."], ["token: xx"], False),
        ([], ["anything"], True),
    ],
)
def test_match(shown: list[str], printed: list[str], ok: bool) -> None:
    assert (markdown.match(shown, printed) is None) is ok


def test_bad_directives_are_errors() -> None:
    with pytest.raises(ValueError, match="relative path"):
        markdown.parse("<!-- file: ../x -->\n```toml\nx\n```\n")
    with pytest.raises(ValueError, match="unknown directive"):
        markdown.parse("<!-- doc-test: sometimes -->\n```sh\nx\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        markdown.parse("```sh\necho\n")
