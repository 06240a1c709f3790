"""The managed matcher against its plain reference, every encoding, and no false finding."""

from __future__ import annotations

import base64
import os
import pickle
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyturn.scan.forms import encodings
from keyturn.scan.index import MIN_LENGTH, ManagedIndex, find_plain
from keyturn.scan.keys import ScanKeys
from keyturn.scan.model import ManagedEntry
from tests.scan.corpus import managed_lines, shaped


def entry(n: int, state: str = "current") -> ManagedEntry:
    return ManagedEntry(f"t/c{n}", "t", "smtp", 1, state, "owner", ("svc",))


def index_of(values: list[str]) -> ManagedIndex:
    index = ManagedIndex(ScanKeys.from_fingerprint_key(os.urandom(32)))
    for n, value in enumerate(values):
        index.add(entry(n), value)
    return index.seal()


def spans(index: ManagedIndex, data: bytes) -> set[tuple[int, int]]:
    return {(h.start, h.end) for h in index.find(data)}


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.text(min_size=MIN_LENGTH, max_size=40), min_size=1, max_size=6),
    noise=st.lists(st.binary(max_size=30), max_size=30),
    seed=st.integers(0, 2**32),
)
def test_matcher_agrees_with_the_plain_reference(
    values: list[str], noise: list[bytes], seed: int
) -> None:
    """Any values (any characters), any forms, anywhere in any bytes: the fast matcher finds
    exactly what bytes.find over the forms themselves finds."""
    rng = random.Random(seed)
    forms = [form for value in values for _, form in encodings(value)]
    parts = noise + rng.sample(forms, k=min(len(forms), 8))
    rng.shuffle(parts)
    data = b"".join(parts)
    index = index_of(values)
    assert spans(index, data) == find_plain(forms, data)
    assert len(index.find(data)) == len(spans(index, data))  # each occurrence once


def test_every_encoding_is_found_and_named() -> None:
    value = shaped(random.Random(1), 24) + ' "é /@:+%'
    index = index_of([value])
    found = {}
    for name, line, encoding in managed_lines(value, "mailer@example.com"):
        data = f"before\n{line}\nafter\n".encode()
        hits = index.find(data)
        assert hits, f"{encoding} in {name} not found"
        found[encoding] = {enc for h in hits for _, enc in index.identify(h.fingerprint)}
    assert set(found) == {
        "raw",
        "escaped",
        "url-encoded",
        "form-encoded",
        "url-userinfo",
        "base64",
        "base64url",
        "hex",
    }
    assert found["hex"] == {"hex"} and found["escaped"] == {"escaped"}


def test_base64_inside_a_larger_blob_at_every_alignment() -> None:
    value = "kt-" + "".join(random.choice(string.ascii_letters) for _ in range(29))
    index = index_of([value])
    for prefix in range(6):
        blob = base64.b64encode(os.urandom(prefix) + value.encode() + os.urandom(5))
        assert index.find(b"data: " + blob), f"not found after {prefix} bytes"


def test_no_false_finding_on_10000_random_strings_of_the_same_shapes() -> None:
    rng = random.Random(7)
    values = [shaped(rng) for _ in range(20)]
    index = index_of(values)
    decoys = []
    for _ in range(10_000):
        decoy = shaped(rng)
        decoys.append(rng.choice(managed_lines(decoy, "mailer@example.com"))[1])
    # Near misses too: each value with one character changed, and cut short by one.
    for value in values:
        decoys.append(value[:-1] + ("x" if value[-1] != "x" else "y"))
        decoys.append(value[:-1])
    data = "\n".join(decoys).encode()
    assert index.find(data) == []
    # and the same text with the real values in it finds exactly them
    planted = data + b"\n" + "\n".join(values).encode()
    assert len(index.find(planted)) == len(values)


def test_short_values_are_not_indexed() -> None:
    index = index_of(["short", "x" * MIN_LENGTH])
    assert index.too_short == 1 and len(index) == 1


def test_the_index_holds_no_value_and_pickles_without_one() -> None:
    values = [shaped(random.Random(3), 30) for _ in range(5)]
    index = index_of(values)
    blob = pickle.dumps(index)
    for value in values:
        for _, form in encodings(value):
            assert form not in blob
            for offset in range(0, len(form) - 7):
                assert form[offset : offset + 8] not in blob, "a fragment of a form is stored"
    assert pickle.loads(blob).find(values[0].encode())  # noqa: S301 (our own bytes)


@pytest.mark.parametrize("state, live", [("current", True), ("previous", True), ("retired", False)])
def test_live_states(state: str, live: bool) -> None:
    assert entry(0, state).live is live
