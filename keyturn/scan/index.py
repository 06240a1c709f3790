"""The index of managed values, and the matcher that finds them in bytes without them.

The index holds, for every form of every value (``forms.encodings``), its HMAC (the *form
fingerprint*) and keyed digests of a few of its short substrings (the *anchors*), never the
value. The matcher finds any occurrence of any form anywhere in a text, as a substring:

- A lane has a gram length ``q`` and a stride ``s``; it holds forms of at least ``q + s - 1``
  bytes. For each form, the digests of its ``s`` grams starting at offsets ``0 .. s-1``.
- A text is cut into runs of the bytes that occur in the lane's forms (a C-speed regular
  expression), and inside each run the matcher digests one gram every ``s`` bytes.
- An occurrence of a form starting at ``p`` contains exactly one sampled gram, at some
  ``t`` in ``p .. p+s-1``: its digest is in the index with offset ``j = t - p``. The bytes at
  ``t - j`` of the form's length are then checked against the form fingerprint (HMAC-SHA256,
  compared in constant time), so an anchor collision never makes a finding.

So the cost is one keyed digest every ``s`` bytes of secret-looking text, whatever the
number of values, and the plain reference ``find_plain`` (``bytes.find`` over the forms
themselves) is the oracle the tests hold it to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from keyturn.scan.forms import encodings
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import ManagedEntry

MIN_LENGTH = 8  # shorter values would match ordinary words: they are not scanned for
LANES = ((8, 8), (4, 4))  # (gram, stride), longest first
_FP_BYTES = 16
_ANCHOR_BYTES = 8

# An anchor is packed in one int, ``form number * 16 + offset`` (a stride is at most 16): a
# tuple per anchor would triple the index's memory (about 5 KB a value as it is).
_PACK = 16
Anchors = dict[bytes, int | tuple[int, ...]]


@dataclass
class Lane:
    gram: int
    stride: int
    min_length: int = 1 << 30
    alphabet: set[int] = field(default_factory=set)
    anchors: Anchors = field(default_factory=dict)
    runs: re.Pattern[bytes] | None = None

    @property
    def shortest(self) -> int:
        return self.gram + self.stride - 1

    def seal(self) -> None:
        """Compile the run pattern once every form is in."""
        if self.anchors:
            chars = b"".join(re.escape(bytes([b])) for b in sorted(self.alphabet))
            self.runs = re.compile(b"[" + chars + b"]{%d,}" % self.min_length)


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    fingerprint: bytes


def form_fingerprint(keys: ScanKeys, form: bytes) -> bytes:
    return hmac.digest(keys.match, form, "sha256")[:_FP_BYTES]


class ManagedIndex:
    """Form fingerprints and anchors of every managed value; picklable, holds no value."""

    def __init__(self, keys: ScanKeys) -> None:
        self.keys = keys
        self.entries: list[ManagedEntry] = []
        self.forms: dict[bytes, list[tuple[int, str]]] = {}
        self.table: list[tuple[int, bytes]] = []  # per form: its length and fingerprint
        self.lanes = [Lane(q, s) for q, s in LANES]
        self.too_short = 0  # values not scanned for (shorter than MIN_LENGTH)

    def __len__(self) -> int:
        return len(self.entries)

    # -- building (values pass through, one at a time) -------------------------------------

    def add(self, entry: ManagedEntry, value: str) -> bool:
        """Index every form of *value* as *entry*; False if it is too short to scan for."""
        if len(value) < MIN_LENGTH:
            self.too_short += 1
            return False
        index = len(self.entries)
        self.entries.append(entry)
        for encoding, form in encodings(value):
            fp = form_fingerprint(self.keys, form)
            known = self.forms.setdefault(fp, [])
            if not known:
                self._anchor(form, fp)
            known.append((index, encoding))
        return True

    def _anchor(self, form: bytes, fp: bytes) -> None:
        lane = next(lane for lane in self.lanes if len(form) >= lane.shortest)
        lane.min_length = min(lane.min_length, len(form))
        lane.alphabet.update(form)
        number = len(self.table)
        self.table.append((len(form), fp))
        base = hashlib.blake2b(key=self.keys.anchor, digest_size=_ANCHOR_BYTES)
        for offset in range(lane.stride):
            digest = base.copy()
            digest.update(form[offset : offset + lane.gram])
            key, packed = digest.digest(), number * _PACK + offset
            known = lane.anchors.get(key)
            if known is None:
                lane.anchors[key] = packed
            else:  # two forms share a gram (or a digest): rare
                lane.anchors[key] = (*(known if isinstance(known, tuple) else (known,)), packed)

    def seal(self) -> ManagedIndex:
        for lane in self.lanes:
            lane.seal()
        return self

    # -- matching --------------------------------------------------------------------------

    def find(self, data: bytes) -> list[Hit]:
        """Every occurrence of every indexed form in *data*."""
        hits: list[Hit] = []
        for lane in self.lanes:
            if lane.runs is not None and len(data) >= lane.min_length:
                hits.extend(self._find_in_lane(lane, data))
        return hits

    def _find_in_lane(self, lane: Lane, data: bytes) -> Iterator[Hit]:
        assert lane.runs is not None
        base = hashlib.blake2b(key=self.keys.anchor, digest_size=_ANCHOR_BYTES)
        anchors, gram, stride = lane.anchors, lane.gram, lane.stride
        for run in lane.runs.finditer(data):
            low, high = run.span()
            for t in range(low, high - gram + 1, stride):
                digest = base.copy()
                digest.update(data[t : t + gram])
                found = anchors.get(digest.digest())
                if found is not None:
                    yield from self._verify(data, t, low, high, found)

    def _verify(
        self, data: bytes, t: int, low: int, high: int, found: int | tuple[int, ...]
    ) -> Iterator[Hit]:
        for packed in found if isinstance(found, tuple) else (found,):
            number, offset = divmod(packed, _PACK)
            length, fp = self.table[number]
            start = t - offset
            end = start + length
            if start >= low and end <= high:
                candidate = form_fingerprint(self.keys, data[start:end])
                if hmac.compare_digest(candidate, fp):
                    yield Hit(start, end, fp)

    def identify(self, fp: bytes) -> list[tuple[ManagedEntry, str]]:
        """The versions (and encodings) whose form has fingerprint *fp*."""
        return [(self.entries[i], encoding) for i, encoding in self.forms.get(fp, ())]

    def lookup(self, text: bytes) -> list[tuple[ManagedEntry, str]]:
        """The versions of which *text* is exactly a form."""
        return self.identify(form_fingerprint(self.keys, text))


def find_plain(forms: Iterable[bytes], data: bytes) -> set[tuple[int, int]]:
    """The reference matcher, for tests: every (start, end) of every form, by bytes.find."""
    spans = set()
    for form in forms:
        at = data.find(form)
        while at != -1:
            spans.add((at, at + len(form)))
            at = data.find(form, at + 1)
    return spans
