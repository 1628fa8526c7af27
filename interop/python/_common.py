"""Shared bits of mailguard's Python interop helpers (run with the venv of scripts/interop-env)."""

import json
import os
import sys
from datetime import datetime, timedelta, timezone

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_VERDICT_SCHEMA = os.path.join(REPO_ROOT, "schemas", "OutboundVerdict.avsc")

# Avro single-object encoding: marker, then the 8-byte little-endian
# CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form.
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
# Confluent framing: magic byte 0, then the schema id as a 4-byte big-endian int.
CONFLUENT_MAGIC = 0

# Keys of a --security-props file with this prefix configure the schema
# registry client (prefix removed), e.g. schema.registry.basic.auth.user.info.
REGISTRY_PREFIX = "schema.registry."

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def die(msg, code=1):
    print(f"{os.path.basename(sys.argv[0])}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def note(msg):
    print(f"{os.path.basename(sys.argv[0])}: {msg}", file=sys.stderr)


def read_properties(path):
    """Java-style .properties subset: key=value or key: value lines, # and ! comments."""
    props = {}
    try:
        with open(path, encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line[0] in "#!":
                    continue
                sep = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
                if sep < 0:
                    die(f"{path}:{n}: expected key=value, got {line!r}")
                props[line[:sep].strip()] = line[sep + 1:].strip()
    except OSError as e:
        die(f"cannot read {path}: {e}")
    return props


def split_security_props(path):
    """(kafka_conf, registry_conf) from a --security-props file (or None)."""
    if not path:
        return {}, {}
    kafka, registry = {}, {}
    for k, v in read_properties(path).items():
        if k.startswith(REGISTRY_PREFIX):
            registry[k[len(REGISTRY_PREFIX):]] = v
        else:
            kafka[k] = v
    return kafka, registry


def registry_client(url, extra_conf):
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = {"url": url}
    conf.update(extra_conf)
    user_info = os.environ.get("MAILGUARD_REGISTRY_USER_INFO")
    if user_info and "basic.auth.user.info" not in conf:
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


def load_schema_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        json.loads(text)
    except (OSError, ValueError) as e:
        die(f"cannot load Avro schema {path}: {e}")
    return text


# CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
_FP_EMPTY = 0xC15D213AA4D7A795
_FP_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_FP_EMPTY & -(_fp & 1))
    _FP_TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    fp = _FP_EMPTY
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


def parsed_schema_and_fingerprint(schema_text):
    """(fastavro parsed schema, 8-byte LE fingerprint) of an Avro schema text."""
    import fastavro
    from fastavro.schema import to_parsing_canonical_form

    parsed = fastavro.parse_schema(json.loads(schema_text))
    canonical = to_parsing_canonical_form(parsed)
    return parsed, crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


def to_json_value(obj):
    """json.dumps default=: Avro values fastavro returns that JSON lacks."""
    if isinstance(obj, datetime):
        # timestamp-millis comes back as an aware datetime; print ms since epoch
        # (the "friendly JSON" form the producer accepts).
        return (obj - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")
