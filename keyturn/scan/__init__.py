"""Secret scanning tied to the inventory (seed 001): `keyturn scan`.

forms      the encodings a value takes in a file (raw, URL, userinfo, escaped, hex, base64)
keys       the scan's keys, derived from keyturn's fingerprint key
index      form fingerprints and anchors of managed values, and the matcher (no values)
managed    the index built from keyturn's database, each version decrypted once
detect     the `Detector` interface for unmanaged credentials, and its registry
rules      keyturn's own detector: SMTP credentials the libraries miss
credsweeper  CredSweeper behind `Detector` (the ``scan`` extra)
sources    documents: files and folders, git's index, git history
scanner    one batch to findings (values dropped in the process that read them)
run        batches here or in worker processes; the cache
cache      what the detectors spotted, by content (no values)
baseline   accepted findings (fingerprints only)
report     text, JSON and SARIF 2.1.0
leak       `--rotate-leaked`: leak rotations recorded with where the value was found
"""

from keyturn.scan.detect import Detection, Detector, Spotted
from keyturn.scan.model import Document, Finding, ManagedEntry, Origin, Where

__all__ = [
    "Detection",
    "Detector",
    "Document",
    "Finding",
    "ManagedEntry",
    "Origin",
    "Spotted",
    "Where",
]
