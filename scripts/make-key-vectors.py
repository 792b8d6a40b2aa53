#!/usr/bin/env python3
"""Writes the key-event vectors spec/vectors/entry-v2-key-*.txt and their leaf hashes,
independently of the Rust code: the lines, the signed message and the Ed25519 signatures are
built here from spec/entry.md ("Key events") alone. The Rust tests
(verifier/tests/key_entry.rs) must produce the same bytes. Needs Python's `cryptography`
(scripts/test.sh installs it with securesystemslib)."""
import base64, hashlib, pathlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = b"reprolog-key-event/v1\x00"

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

class Key:
    """An Ed25519 key with a name: a Nix key (`name:base64`), or the log's signed-note key,
    whose name is the log's origin."""
    def __init__(self, name: str, seed_byte: int):
        self.name = name
        self.private = Ed25519PrivateKey.from_private_bytes(bytes([seed_byte] * 32))
        self.public = self.private.public_key().public_bytes_raw()

    def nix(self) -> str:
        return f"{self.name}:{b64(self.public)}"

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

def event(kind: str, log: Key, key: Key, signers, new_key=None, as_of=None, revoked_by=None,
          made_at=None) -> bytes:
    """The entry: the lines up to the first `signature` line, then one signature line per
    signer (`signature`, then for a rotation `new-signature`), all over the same message."""
    lines = ["reprolog-entry/v2", f"kind {kind}", f"log {log.name}", f"key {key.nix()}"]
    if made_at is not None:
        lines.append(f"made-at {made_at}")
    if new_key is not None:
        lines.append(f"new-key {new_key.nix()}")
    if as_of is not None:
        lines.append(f"as-of {as_of}")
        lines.append(f"revoked-by {revoked_by}")
    signed = "".join(line + "\n" for line in lines).encode()
    message = DOMAIN + signed
    fields = ["signature", "new-signature"]
    assert len(signers) <= len(fields)
    tail = "".join(f"{field} {b64(s.sign(message))}\n" for field, s in zip(fields, signers))
    return signed + tail.encode()

log = Key("example.org/log", 0x09)
key1 = Key("cache.example.org-1", 0x01)
key2 = Key("cache.example.org-2", 0x02)

vectors = {
    "entry-v2-key-register": event("key-register", log, key1, [log], made_at=0),
    "entry-v2-key-rotate": event("key-rotate", log, key1, [key1, key2], new_key=key2),
    "entry-v2-key-revoke": event("key-revoke", log, key2, [key2], as_of=7, revoked_by="key"),
    "entry-v2-key-revoke-operator": event(
        "key-revoke", log, key1, [log], as_of=3, revoked_by="operator"
    ),
}

out = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"
for name, entry in vectors.items():
    (out / f"{name}.txt").write_bytes(entry)
    (out / f"{name}.leaf-hash").write_text(hashlib.sha256(b"\0" + entry).hexdigest() + "\n")
