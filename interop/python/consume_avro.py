#!/usr/bin/env python3
"""Consume Avro records from Kafka the way a third-party client would (confluent-kafka +
the Confluent schema registry's Avro deserializer) and print each as one JSON line:

  {"key": "alice@example.com", "value": {"message_id": "m1", ..., "sent_at": 1767225600000}}

Reads committed records only (isolation.level=read_committed) from the earliest offset, with a
fresh consumer group unless --group is given, and stops after --expect N records (exit 0) or
at --timeout (exit 1, with a message on stderr). A record that cannot be decoded exits 2.

Values with the Confluent framing (magic 0 + schema id) are decoded with the writer schema
fetched from --registry. Values in Avro single-object encoding (C3 01 + fingerprint) are
decoded with the --schema file whose fingerprint matches (no registry needed). timestamp-millis
fields are printed as milliseconds since the epoch; null values (tombstones) as null.

Run with the venv of scripts/interop-env:  "$(scripts/interop-env)" consume_avro.py -h
"""

import argparse
import io
import json
import sys
import time
import uuid

from _common import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    die,
    load_schema_text,
    note,
    parsed_schema_and_fingerprint,
    registry_client,
    split_security_props,
    to_json_value,
)


def parse_args():
    p = argparse.ArgumentParser(description="Consume Avro records and print them as JSON lines.")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    p.add_argument("--registry", help="schema registry base URL (Confluent API); needed for "
                   "Confluent-framed values")
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, required=True, metavar="N", help="stop after N records")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait in total (default 30)")
    p.add_argument("--group", help="consumer group id (default: a fresh random one)")
    p.add_argument("--schema", action="append", default=[], metavar="PATH",
                   help="writer schema(s) for single-object encoded values (repeatable)")
    p.add_argument("--reader-schema", metavar="PATH",
                   help="decode Confluent-framed values into this reader schema (schema resolution)")
    p.add_argument("--meta", action="store_true",
                   help="also print partition, offset, timestamp, headers, encoding and schema_id")
    p.add_argument("--security-props", metavar="FILE",
                   help="properties file: librdkafka settings and schema.registry.<key> settings "
                        "(see produce_verdicts.py)")
    args = p.parse_args()
    if args.expect < 0:
        die("--expect must be >= 0", 2)
    return args


class Decoder:
    def __init__(self, args, registry_extra):
        self._registry_url = args.registry
        self._registry_extra = registry_extra
        self._reader_schema_path = args.reader_schema
        self._confluent = None
        self._single = {}
        for path in args.schema:
            parsed, fp = parsed_schema_and_fingerprint(load_schema_text(path))
            self._single[fp] = parsed

    def _confluent_deserializer(self):
        if self._confluent is None:
            if not self._registry_url:
                raise ValueError("Confluent-framed value but no --registry given")
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            reader = load_schema_text(self._reader_schema_path) if self._reader_schema_path else None
            self._confluent = AvroDeserializer(
                registry_client(self._registry_url, self._registry_extra), reader)
        return self._confluent

    def decode(self, topic, value):
        """(decoded value, encoding, schema id or None)."""
        if value is None:
            return None, "null", None
        if len(value) >= 5 and value[0] == CONFLUENT_MAGIC:
            from confluent_kafka.serialization import MessageField, SerializationContext

            ctx = SerializationContext(topic, MessageField.VALUE)
            return (self._confluent_deserializer()(value, ctx), "confluent",
                    int.from_bytes(value[1:5], "big"))
        if len(value) >= 10 and value[:2] == SINGLE_OBJECT_MAGIC:
            from fastavro import schemaless_reader

            fp = bytes(value[2:10])
            parsed = self._single.get(fp)
            if parsed is None:
                raise ValueError(f"single-object value with fingerprint {fp.hex()} matches no --schema")
            return schemaless_reader(io.BytesIO(value[10:]), parsed), "single-object", None
        raise ValueError(f"unknown encoding (first bytes {bytes(value[:4]).hex()})")


def main():
    args = parse_args()
    from confluent_kafka import Consumer, KafkaError

    kafka_extra, registry_extra = split_security_props(args.security_props)
    decoder = Decoder(args, registry_extra)
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or f"mailguard-interop-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    conf.update(kafka_extra)
    consumer = Consumer(conf)
    consumer.subscribe([args.topic])

    got = 0
    deadline = time.monotonic() + args.timeout
    try:
        while got < args.expect:
            left = deadline - time.monotonic()
            if left <= 0:
                note(f"timed out after {args.timeout}s: got {got} of {args.expect} record(s) from {args.topic}")
                sys.exit(1)
            msg = consumer.poll(min(left, 1.0))
            if msg is None:
                continue
            if msg.error():
                err = msg.error()
                if err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
                    die(f"consumer error: {err}")
                note(f"consumer warning: {err}")
                continue
            raw_key = msg.key()
            try:
                key = None if raw_key is None else raw_key.decode("utf-8")
                value, encoding, schema_id = decoder.decode(msg.topic(), msg.value())
            except Exception as e:  # noqa: BLE001 - any decoding failure ends the run
                die(f"cannot decode record at {msg.topic()}/{msg.partition()}@{msg.offset()}: "
                    f"{type(e).__name__}: {e}", 2)
            out = {"key": key, "value": value}
            if args.meta:
                out.update({
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp()[1],
                    "headers": {k: (None if v is None else v.decode("utf-8", "backslashreplace"))
                                for k, v in (msg.headers() or [])},
                    "encoding": encoding,
                    "schema_id": schema_id,
                })
            print(json.dumps(out, default=to_json_value, sort_keys=False), flush=True)
            got += 1
    finally:
        consumer.close()
    if args.expect:
        note(f"consumed {got} record(s) from {args.topic}")


if __name__ == "__main__":
    main()
