#!/usr/bin/env python3
"""Writes core/domain/src/fixtures/nacl_box_vector.json, the NaCl box interoperability vector.

The upload payload (DESIGN §3.3) is a libsodium `crypto_box_easy` box: Curve25519-XSalsa20-Poly1305,
16-byte Poly1305 tag followed by the ciphertext, nonce carried separately. The Rust side
(`diagnosis_domain::crypto`) must open what an independent implementation seals and produce
byte-identical output for the same inputs. This script is that independent implementation: PyNaCl,
the Python binding of libsodium.

Everything is deterministic, so rerunning the script reproduces the committed file byte for byte:
the secret keys and the nonce are SHA-256 digests of fixed labels, and the plaintext is a serialized
`covidshield.Upload` encoded by hand below (no protobuf library needed).

Usage (from the repository root):

    pip install pynacl
    python3 core/domain/tests/vectors/make_nacl_vector.py > core/domain/src/fixtures/nacl_box_vector.json
"""

import hashlib
import json
import sys

from nacl.public import Box, PrivateKey


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode("ascii")).digest()


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


# A one-key upload in the shape the COVID Alert app sends: only timestamp.seconds, TRL 1,
# an explicit rolling_period of 144, no report_type, no days_since_onset.
TIMESTAMP_SECONDS = 1_700_000_000
KEY_DATA = bytes(range(16))
ROLLING_START_INTERVAL_NUMBER = TIMESTAMP_SECONDS // 600 // 144 * 144 - 144
timestamp = field_varint(1, TIMESTAMP_SECONDS)
key = (
    field_bytes(1, KEY_DATA)
    + field_varint(2, 1)
    + field_varint(3, ROLLING_START_INTERVAL_NUMBER)
    + field_varint(4, 144)
)
plaintext = field_bytes(1, timestamp) + field_bytes(2, key)

app_secret = PrivateKey(digest("diagnosis-server nacl vector: app secret key"))
server_secret = PrivateKey(digest("diagnosis-server nacl vector: server secret key"))
nonce = digest("diagnosis-server nacl vector: nonce")[:24]

# The app seals to the server: Box(own secret, peer public).
sealed = Box(app_secret, server_secret.public_key).encrypt(plaintext, nonce)

vector = {
    "description": "NaCl crypto_box_easy vector produced by PyNaCl (libsodium); "
    "regenerate with core/domain/tests/vectors/make_nacl_vector.py",
    "app_secret_key": bytes(app_secret).hex(),
    "app_public_key": bytes(app_secret.public_key).hex(),
    "server_secret_key": bytes(server_secret).hex(),
    "server_public_key": bytes(server_secret.public_key).hex(),
    "nonce": nonce.hex(),
    "plaintext": plaintext.hex(),
    "ciphertext": sealed.ciphertext.hex(),
    "upload_timestamp_seconds": TIMESTAMP_SECONDS,
    "upload_rolling_start_interval_number": ROLLING_START_INTERVAL_NUMBER,
}

json.dump(vector, sys.stdout, indent=2)
sys.stdout.write("\n")
