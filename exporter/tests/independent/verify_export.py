#!/usr/bin/env python3
"""An independent implementation of the export file format (DESIGN §4.1), for cross-checking.

It shares no code with the Rust exporter: the protobuf messages are declared below from the
field table of DESIGN §3 (not compiled from proto/covidshield.proto), encoding is done by the
`protobuf` package, signatures are checked with the `cryptography` package, and the canonical
key order is implemented again here.

Requirements: Python 3.9+, `pip install cryptography protobuf`.

Commands
  verify_export.py verify EXPORT.zip PUBLIC_KEY.pem [PUBLIC_KEY.pem ...]
      Checks a published file the way a phone reads it: exactly the entries export.bin then
      export.sig (deflated), the 16-byte header, batch 1 of 1, signature infos, keys in
      canonical order, canonical protobuf encoding, and each signature (ECDSA P-256 over
      SHA-256 of the whole export.bin) against the public key given at the same position.
      Prints a JSON summary on stdout.

  verify_export.py render INPUT.json OUTPUT.bin
      Builds export.bin for the window, signers and keys described in INPUT.json (the format
      of exporter/fixtures/export-*.json) with the protobuf library, sorting the keys itself.

Exit status: 0 success, 1 the file is invalid, 2 usage error, 3 a required package is missing.
"""

import hashlib
import io
import json
import sys
import zipfile

EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_MISSING_PACKAGE = 3

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as error:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"verify_export.py: missing Python package ({error}); "
        "install them with: pip install cryptography protobuf\n"
    )
    sys.exit(EXIT_MISSING_PACKAGE)

HEADER = b"EK Export v1    "
SIGNATURE_ALGORITHM = "1.2.840.10045.4.3.2"
DEFAULT_ROLLING_PERIOD = 144


class Invalid(Exception):
    """The export file breaks the format."""


def _build_messages():
    """Declares the export messages of DESIGN §3 (proto2, package covidshield)."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="independent_export.proto", package="covidshield", syntax="proto2"
    )

    def message(name, fields, enums=()):
        msg = file.message_type.add(name=name)
        for enum_name, values in enums:
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
        for number, field_name, kind, label, extra in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            for attribute, value in extra.items():
                setattr(field, attribute, value)
        return msg

    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message(
        "TemporaryExposureKey",
        [
            (1, "key_data", F.TYPE_BYTES, optional, {}),
            (2, "transmission_risk_level", F.TYPE_INT32, optional, {}),
            (3, "rolling_start_interval_number", F.TYPE_INT32, optional, {}),
            (4, "rolling_period", F.TYPE_INT32, optional, {"default_value": "144"}),
            (5, "report_type", F.TYPE_ENUM, optional,
             {"type_name": ".covidshield.TemporaryExposureKey.ReportType"}),
            (6, "days_since_onset_of_symptoms", F.TYPE_SINT32, optional, {}),
        ],
        enums=[(
            "ReportType",
            [("UNKNOWN", 0), ("CONFIRMED_TEST", 1), ("CONFIRMED_CLINICAL_DIAGNOSIS", 2),
             ("SELF_REPORT", 3), ("RECURSIVE", 4), ("REVOKED", 5)],
        )],
    )
    message(
        "SignatureInfo",
        [
            (3, "verification_key_version", F.TYPE_STRING, optional, {}),
            (4, "verification_key_id", F.TYPE_STRING, optional, {}),
            (5, "signature_algorithm", F.TYPE_STRING, optional, {}),
        ],
    )
    tek = {"type_name": ".covidshield.TemporaryExposureKey"}
    message(
        "TemporaryExposureKeyExport",
        [
            (1, "start_timestamp", F.TYPE_FIXED64, optional, {}),
            (2, "end_timestamp", F.TYPE_FIXED64, optional, {}),
            (3, "region", F.TYPE_STRING, optional, {}),
            (4, "batch_num", F.TYPE_INT32, optional, {}),
            (5, "batch_size", F.TYPE_INT32, optional, {}),
            (6, "signature_infos", F.TYPE_MESSAGE, repeated,
             {"type_name": ".covidshield.SignatureInfo"}),
            (7, "keys", F.TYPE_MESSAGE, repeated, tek),
            (8, "revised_keys", F.TYPE_MESSAGE, repeated, tek),
        ],
    )
    message(
        "TEKSignature",
        [
            (1, "signature_info", F.TYPE_MESSAGE, optional,
             {"type_name": ".covidshield.SignatureInfo"}),
            (2, "batch_num", F.TYPE_INT32, optional, {}),
            (3, "batch_size", F.TYPE_INT32, optional, {}),
            (4, "signature", F.TYPE_BYTES, optional, {}),
        ],
    )
    message(
        "TEKSignatureList",
        [(1, "signatures", F.TYPE_MESSAGE, repeated,
          {"type_name": ".covidshield.TEKSignature"})],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"covidshield.{name}"))
        for name in ("TemporaryExposureKeyExport", "TEKSignatureList")
    }


MESSAGES = _build_messages()
Export = MESSAGES["TemporaryExposureKeyExport"]
SignatureList = MESSAGES["TEKSignatureList"]


def canonical_sort_key(key):
    """DESIGN §4.1: rolling_start_interval_number, rolling_period, transmission_risk_level,
    report_type, days_since_onset (unknown first), key_data."""
    days = key["days_since_onset_of_symptoms"]
    return (
        key["rolling_start_interval_number"],
        key["rolling_period"],
        key["transmission_risk_level"],
        key["report_type"],
        (0, 0) if days is None else (1, days),
        key["key_data"],
    )


def key_as_dict(tek):
    """A parsed TemporaryExposureKey as plain values (absent fields as the platforms read them,
    and whether they were present)."""
    return {
        "key_data": tek.key_data.hex(),
        "transmission_risk_level": tek.transmission_risk_level,
        "rolling_start_interval_number": tek.rolling_start_interval_number,
        "rolling_period": tek.rolling_period,
        "rolling_period_present": tek.HasField("rolling_period"),
        "report_type": tek.report_type,
        "days_since_onset_of_symptoms": (
            tek.days_since_onset_of_symptoms
            if tek.HasField("days_since_onset_of_symptoms")
            else None
        ),
    }


def signature_info_as_dict(info):
    return {
        "verification_key_version": info.verification_key_version,
        "verification_key_id": info.verification_key_id,
        "signature_algorithm": info.signature_algorithm,
    }


def render(input_path, output_path):
    with open(input_path, encoding="utf-8") as f:
        case = json.load(f)
    export = Export()
    export.start_timestamp = case["start_timestamp"]
    export.end_timestamp = case["end_timestamp"] + (case["part"] - 1)
    export.region = case["region"]
    export.batch_num = 1
    export.batch_size = 1
    for signer in case["signers"]:
        info = export.signature_infos.add()
        info.verification_key_version = signer["verification_key_version"]
        info.verification_key_id = signer["verification_key_id"]
        info.signature_algorithm = SIGNATURE_ALGORITHM
    keys = [dict(k, key_data=bytes.fromhex(k["key_data"])) for k in case["keys"]]
    for key in sorted(keys, key=canonical_sort_key):
        tek = export.keys.add()
        tek.key_data = key["key_data"]
        tek.transmission_risk_level = key["transmission_risk_level"]
        tek.rolling_start_interval_number = key["rolling_start_interval_number"]
        if key["rolling_period"] != DEFAULT_ROLLING_PERIOD:
            tek.rolling_period = key["rolling_period"]
        tek.report_type = key["report_type"]
        if key["days_since_onset_of_symptoms"] is not None:
            tek.days_since_onset_of_symptoms = key["days_since_onset_of_symptoms"]
    with open(output_path, "wb") as f:
        f.write(HEADER + export.SerializeToString(deterministic=True))


def verify(zip_path, public_key_paths):
    public_keys = []
    for path in public_key_paths:
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise Invalid(f"{path} is not a P-256 public key")
        public_keys.append(key)

    with open(zip_path, "rb") as f:
        archive_bytes = f.read()
    try:
        archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    except zipfile.BadZipFile as error:
        raise Invalid(f"not a zip file: {error}") from error
    entries = archive.infolist()
    names = [entry.filename for entry in entries]
    if names != ["export.bin", "export.sig"]:
        raise Invalid(f"entries must be export.bin then export.sig, found {names}")
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_DEFLATED:
            raise Invalid(f"{entry.filename} is not deflated")
    export_bin = archive.read("export.bin")
    export_sig = archive.read("export.sig")

    if export_bin[:16] != HEADER:
        raise Invalid(f"export.bin header is {export_bin[:16]!r}, not {HEADER!r}")
    export = Export()
    export.ParseFromString(export_bin[16:])
    if export.SerializeToString(deterministic=True) != export_bin[16:]:
        raise Invalid("export.bin is not the canonical protobuf encoding of its content")
    if (export.batch_num, export.batch_size) != (1, 1):
        raise Invalid(f"batch {export.batch_num} of {export.batch_size}, expected 1 of 1")
    if not 1 <= len(export.signature_infos) <= 10:
        raise Invalid(f"{len(export.signature_infos)} signature infos, expected 1 to 10")
    for info in export.signature_infos:
        if info.signature_algorithm != SIGNATURE_ALGORITHM:
            raise Invalid(f"signature algorithm {info.signature_algorithm!r}")
    keys = [key_as_dict(tek) for tek in export.keys]
    for index, key in enumerate(keys):
        if len(bytes.fromhex(key["key_data"])) != 16:
            raise Invalid(f"key {index} does not have 16 bytes of key data")
        if key["rolling_period_present"] and key["rolling_period"] == DEFAULT_ROLLING_PERIOD:
            raise Invalid(f"key {index} writes the default rolling_period 144")
    sortable = [dict(k, key_data=bytes.fromhex(k["key_data"])) for k in keys]
    order = [canonical_sort_key(k) for k in sortable]
    if any(a >= b for a, b in zip(order, order[1:])):
        raise Invalid("keys are not in strictly ascending canonical order (DESIGN §4.1)")
    if len(export.revised_keys) != 0:
        raise Invalid("revised_keys must be empty")

    signature_list = SignatureList()
    signature_list.ParseFromString(export_sig)
    if len(signature_list.signatures) != len(export.signature_infos):
        raise Invalid(
            f"{len(signature_list.signatures)} signatures for "
            f"{len(export.signature_infos)} signature infos"
        )
    if len(public_keys) != len(signature_list.signatures):
        raise Invalid(
            f"{len(public_keys)} public keys given for {len(signature_list.signatures)} signatures"
        )
    signatures = []
    for index, (signature, info, public_key) in enumerate(
        zip(signature_list.signatures, export.signature_infos, public_keys)
    ):
        if signature.signature_info != info:
            raise Invalid(f"signature {index} names another key than signature info {index}")
        if (signature.batch_num, signature.batch_size) != (1, 1):
            raise Invalid(f"signature {index} is not for batch 1 of 1")
        try:
            public_key.verify(signature.signature, export_bin, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as error:
            raise Invalid(f"signature {index} does not verify with {public_key_paths[index]}") from error
        signatures.append(dict(signature_info_as_dict(signature.signature_info), verified=True))

    return {
        "entries": names,
        "header": export_bin[:16].decode("ascii"),
        "start_timestamp": export.start_timestamp,
        "end_timestamp": export.end_timestamp,
        "region": export.region,
        "batch_num": export.batch_num,
        "batch_size": export.batch_size,
        "signature_infos": [signature_info_as_dict(i) for i in export.signature_infos],
        "keys": keys,
        "signatures": signatures,
        "export_bin_sha256": hashlib.sha256(export_bin).hexdigest(),
    }


def main(argv):
    if len(argv) >= 4 and argv[1] == "verify":
        try:
            summary = verify(argv[2], argv[3:])
        except (Invalid, OSError, ValueError) as error:
            sys.stderr.write(f"verify_export.py: {argv[2]}: {error}\n")
            return EXIT_INVALID
        json.dump(summary, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if len(argv) == 4 and argv[1] == "render":
        render(argv[2], argv[3])
        return 0
    sys.stderr.write(__doc__)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv))
