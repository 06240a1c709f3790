"""keyturn's `Detector` interface: what finds credentials keyturn does not manage.

A detector is given a batch of documents and returns detections: where a credential-looking
value is, under which rule, and the value itself wrapped in a `Secret`. The value never
leaves the process that ran the detector: the scan turns each detection into a finding with
a keyed fingerprint right there (``run.scan_batch``) and drops it.

Built in: ``keyturn`` (keyturn's own rules for SMTP credentials the libraries miss) and
``credsweeper`` (Samsung's CredSweeper, in the ``scan`` extra). Third parties register a
class under the ``keyturn.detectors`` entry point group; ``name`` is persisted in baselines
and reports, so it never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import ClassVar, Protocol

from keyturn.domain.errors import PluginMissing, UsageError
from keyturn.domain.model import Secret
from keyturn.scan.model import Document

ENTRY_POINTS = "keyturn.detectors"
BUILT_IN = {
    "keyturn": "keyturn.scan.rules:KeyturnRules",
    "credsweeper": "keyturn.scan.credsweeper:CredSweeperDetector",
}


@dataclass(frozen=True)
class Detection:
    """A credential-looking value in ``documents[document]`` at ``line`` (1-based) and
    columns ``column .. end_column`` (1-based characters, end exclusive)."""

    document: int
    rule: str
    line: int
    column: int
    end_column: int
    value: Secret
    variable: str | None = None
    kind: str = "password"  # the keyturn kind to import it as
    confidence: float | None = None


@dataclass(frozen=True)
class Spotted:
    """A detection whose value is replaced by two keyed MACs (hex): ``value_mac`` under the
    finding key (for fingerprints) and ``form_fp`` under the matching key (to tell whether the
    value is a managed one). This is what findings and the cache are made of."""

    rule: str
    line: int
    column: int
    end_column: int
    detector: str
    value_mac: str
    form_fp: str
    variable: str | None = None
    kind: str = "password"
    confidence: float | None = None


class Detector(Protocol):
    """Finds credentials in documents.

    ``detect`` is called once per batch, in a worker process, with the documents' bytes;
    it returns every detection, in any order, and must not log or print values. ``close``
    frees what the detector holds (models, pools)."""

    name: ClassVar[str]

    def detect(self, documents: Sequence[Document]) -> list[Detection]: ...

    def close(self) -> None: ...


def _class_path(name: str) -> str:
    if name in BUILT_IN:
        return BUILT_IN[name]
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name == name:
            return str(ep.value)
    known = sorted({*BUILT_IN, *(ep.name for ep in entry_points(group=ENTRY_POINTS))})
    raise UsageError(f"no detector {name!r}; known: {', '.join(known)}")


def load(name: str) -> Detector:
    """An instance of the detector called *name*; names the extra to install if missing."""
    module_name, _, attribute = _class_path(name).partition(":")
    try:
        module = __import__(module_name, fromlist=[attribute])
        cls = getattr(module, attribute)
        return cls()  # type: ignore[no-any-return]
    except ImportError as exc:
        raise PluginMissing(
            f"the {name!r} detector needs {exc.name or 'its dependencies'}: "
            "pip install 'keyturn[scan]'"
        ) from exc


def available(name: str) -> bool:
    """Whether *name* can be loaded (its library is installed), without loading it."""
    from importlib.util import find_spec

    if name == "credsweeper":
        return find_spec("credsweeper") is not None
    return True


def default_names() -> list[str]:
    """keyturn's rules, and CredSweeper when the ``scan`` extra is installed."""
    return ["keyturn", *(["credsweeper"] if available("credsweeper") else [])]
