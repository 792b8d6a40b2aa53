#!/usr/bin/env python3
"""Writes spec/vectors/entry-v2-build.txt and its leaf hash, independently of the Rust code:
the statement, the DSSE pre-authentication encoding, the Ed25519 signature and the entry text
are built here from spec/attestation.md and spec/entry.md alone. The Rust tests must produce
the same bytes. Needs Python's `cryptography` (scripts/test.sh installs it with
securesystemslib)."""
import base64, hashlib, json, pathlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"

def nix32(data: bytes) -> str:
    # Nix's base 32: 5-bit groups taken from the end of the hash, last group first.
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        j, k = b // 8, b % 8
        c = data[j] >> k
        if j + 1 < len(data):
            c |= data[j + 1] << (8 - k)
        out.append(ALPHABET[c & 0x1F])
    return "".join(out)

key = Ed25519PrivateKey.from_private_bytes(bytes([42] * 32))
public = key.public_key().public_bytes_raw()
name = "builder-1"
store_path = "/nix/store/apgmnjij5if74scsya5lr1ri1db7l4cc-hello-reprolog"
nar_hash = bytes([0x11] * 32)
build_type = "https://reprolog.dev/attestation/nix-build/v1"
statement = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{
        "name": store_path,
        "digest": {"sha256": nar_hash.hex()},
        "annotations": {"narSize": 120, "references": []},
    }],
    "predicateType": "https://slsa.dev/provenance/v1",
    "predicate": {
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": {
                "derivation": "/nix/store/l6vvcbw6729fwv3bhmbs0jb8lnzp9x0a-hello-reprolog.drv",
                "output": "out",
            },
            "internalParameters": {"system": "x86_64-linux", "nixVersion": "2.8.0"},
        },
        "runDetails": {
            "builder": {"id": f"{build_type}#builder={name}"},
            "metadata": {"startedOn": "2026-12-03T08:00:00Z", "finishedOn": "2026-12-03T08:00:02Z"},
        },
    },
}
body = json.dumps(statement, separators=(",", ":")).encode()
payload_type = b"application/vnd.in-toto+json"
pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)
sig = key.sign(pae)
entry = (
    "reprolog-entry/v2\n"
    "kind build\n"
    f"store-path {store_path}\n"
    f"nar-hash sha256:{nix32(nar_hash)}\n"
    "nar-size 120\n"
    f"builder {name}:{base64.b64encode(public).decode()}\n"
    f"signature {base64.b64encode(sig).decode()}\n"
    f"statement {base64.b64encode(body).decode()}\n"
).encode()
out = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"
(out / "entry-v2-build.txt").write_bytes(entry)
(out / "entry-v2-build.leaf-hash").write_text(hashlib.sha256(b"\0" + entry).hexdigest() + "\n")
