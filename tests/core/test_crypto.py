from __future__ import annotations

import string

import pytest
from cryptography.exceptions import InvalidTag

from keyturn.crypto import envelope
from keyturn.crypto.keys import decode_key, encode_key, generate_key
from keyturn.crypto.secrets import fingerprint, generate_password
from keyturn.domain.errors import PolicyInvalid, UsageError, WrongMasterKey
from keyturn.domain.model import PasswordRules, Secret
from tests.support.keyturn import Harness


def test_master_key_decoding_accepts_padding_or_not() -> None:
    key = generate_key()
    text = encode_key(key.material)
    assert decode_key(text, "X").id == key.id
    assert decode_key(text + "=", "X").id == key.id


@pytest.mark.parametrize("bad", ["", "short", "!!!!", "A" * 100])
def test_bad_master_key_is_one_clear_error(bad: str) -> None:
    with pytest.raises(UsageError, match="expected base64url of 32 bytes") as caught:
        decode_key(bad, "KEYTURN_MASTER_KEY")
    assert bad not in str(caught.value) or bad == ""


def test_value_is_bound_to_its_row() -> None:
    """A ciphertext moved to another credential or version number does not open."""
    key = generate_key()
    wrapped, material = envelope.new_data_key(key)
    ring = envelope.Keyring([key], lambda _id: wrapped)
    sealed = ring.encrypt(wrapped.id, "acme/db", 3, Secret("v"))
    assert ring.decrypt(wrapped.id, "acme/db", 3, sealed).reveal() == "v"
    with pytest.raises(Exception, match="altered or moved"):
        ring.decrypt(wrapped.id, "acme/other", 3, sealed)
    with pytest.raises(Exception, match="altered or moved"):
        ring.decrypt(wrapped.id, "acme/db", 4, sealed)
    with pytest.raises(InvalidTag):
        envelope.open_sealed(
            material, sealed[:-1] + bytes([sealed[-1] ^ 1]), envelope.value_aad("acme/db", 3)
        )


def test_wrong_master_key_is_recognised() -> None:
    right, wrong = generate_key(), generate_key()
    wrapped, _ = envelope.new_data_key(right)
    with pytest.raises(WrongMasterKey, match="KEYTURN_OLD_MASTER_KEY"):
        envelope.unwrap({wrong.id: wrong}, wrapped)
    # Same id, wrong bytes (e.g. a corrupted row): still the clear error, not garbage.
    with pytest.raises(WrongMasterKey):
        envelope.unwrap({right.id: wrong}, wrapped)


def test_two_master_keys_coexist() -> None:
    old, new = generate_key(), generate_key()
    wrapped_old, material_old = envelope.new_data_key(old)
    wrapped_new, material_new = envelope.new_data_key(new)
    masters = {old.id: old, new.id: new}
    assert envelope.unwrap(masters, wrapped_old) == material_old
    assert envelope.unwrap(masters, wrapped_new) == material_new


def test_default_password_is_32_url_safe_characters() -> None:
    values = {generate_password().reveal() for _ in range(50)}
    assert len(values) == 50
    allowed = set(string.ascii_letters + string.digits + "-_")
    assert all(len(v) == 32 and set(v) <= allowed for v in values)


def test_password_rules_are_followed() -> None:
    rules = PasswordRules(length=48, alphabet="ascii", forbid="@:/?#%'\"\\ ")
    for _ in range(50):
        value = generate_password(rules).reveal()
        assert len(value) == 48 and not set(value) & set(rules.forbid)


@pytest.mark.parametrize(
    "rules", [PasswordRules(length=4), PasswordRules(alphabet="abc"), PasswordRules(length=5000)]
)
def test_impossible_rules_are_refused(rules: PasswordRules) -> None:
    with pytest.raises(PolicyInvalid):
        generate_password(rules)


def test_fingerprints_are_stable_and_keyed() -> None:
    value = Secret("same value")
    assert fingerprint(b"k" * 32, value) == fingerprint(b"k" * 32, value)
    assert fingerprint(b"k" * 32, value) != fingerprint(b"j" * 32, value)
    assert "same value" not in fingerprint(b"k" * 32, value)


def test_value_aads_for_columns_equal_value_aad() -> None:
    """The rekey builds associated data for columns of ids and numbers read from the
    database; it must be byte for byte what sealing used."""
    ids = ["acme/db", "t0/cred-1", "a.b_c-d/e/f", "x"]
    numbers = [1, 12, 999999, 2**31]
    columns = envelope.value_aads([i.encode() for i in ids], [str(n).encode() for n in numbers])
    assert list(columns) == [envelope.value_aad(i, n) for i, n in zip(ids, numbers, strict=True)]


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_master_key_file_others_can_read_is_warned_about(
    kt: Harness, mode: int, warned: bool
) -> None:
    """The key file was used whatever its mode: only `keyturn doctor` said a 0644 key was
    readable by every local user. Every command says it now (a warning, not a refusal)."""
    key_file = kt.home / "other.key"
    key_file.write_text(kt.master_key + "\n")
    key_file.chmod(mode)
    env = {"KEYTURN_MASTER_KEY": "", "KEYTURN_MASTER_KEY_FILE": str(key_file)}
    result = kt.spawn("list", env=env)
    assert result.code == 0, result.err
    assert ("users other than its owner can read the master key" in result.err) is warned
    assert kt.master_key not in result.err
