#!/usr/bin/env python3
"""Produce OutboundVerdict records (or any record type) to Kafka the way a third-party
gateway would: confluent-kafka (librdkafka) + the Confluent schema registry's Avro serializer.

Reads one JSON object per line on stdin ("friendly JSON", the record's fields by name):

  {"message_id": "m1", "tenant_id": "t1", "mailbox": "Alice@Example.com",
   "sent_at": 1767225600000, "verdict": "SPAM"}

Omitted optional fields take their schema default. The record key is the "mailbox" field
lower-cased (UTF-8 string), unless the line has a "_key" member (a string, or null for no
key), which is used verbatim and is not part of the record.

Values are written with the Confluent framing (magic 0 + 4-byte schema id from the registry),
or with --single-object as Avro single-object encoding (C3 01 + CRC-64-AVRO fingerprint, LE)
with no registry at all. Keys are partitioned with murmur2 like the Java client (see SPEC).

Prints one JSON line per delivered record on stdout
({"partition":…, "offset":…, "key":…, "schema_id":…}) and a summary on stderr. Exits 1 on
any bad input line or delivery error (after flushing what it could), 2 on usage errors.

Run with the venv of scripts/interop-env:  "$(scripts/interop-env)" produce_verdicts.py -h
"""

import argparse
import json
import sys

from _common import (
    CONFLUENT_MAGIC,
    DEFAULT_VERDICT_SCHEMA,
    SINGLE_OBJECT_MAGIC,
    die,
    load_schema_text,
    note,
    parsed_schema_and_fingerprint,
    registry_client,
    split_security_props,
)

STRATEGIES = ("topic", "record", "topic-record")


def parse_args():
    p = argparse.ArgumentParser(
        description="Produce Avro records read as JSON lines from stdin (see module doc).")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    p.add_argument("--registry", help="schema registry base URL (Confluent API), e.g. "
                   "http://127.0.0.1:8081/apis/ccompat/v7; required unless --single-object")
    p.add_argument("--topic", required=True)
    p.add_argument("--schema", default=DEFAULT_VERDICT_SCHEMA,
                   help="writer schema (.avsc); default: schemas/OutboundVerdict.avsc")
    p.add_argument("--subject-strategy", choices=STRATEGIES, default="topic",
                   help="subject name: <topic>-value (topic, default), <record full name> (record), "
                        "<topic>-<record full name> (topic-record)")
    p.add_argument("--no-auto-register", action="store_true",
                   help="do not register the schema; look its id up under the subject (fails if absent)")
    p.add_argument("--use-latest-version", action="store_true",
                   help="write with the subject's latest registered schema instead of --schema's id")
    p.add_argument("--compression", default="none", choices=("none", "gzip", "snappy", "lz4", "zstd"))
    p.add_argument("--transactional-id",
                   help="produce all records in one transaction with this transactional.id "
                        "(committed at the end; aborted on any error)")
    p.add_argument("--security-props", metavar="FILE",
                   help="properties file: librdkafka settings (security.protocol, sasl.*, ssl.*) and "
                        "schema.registry.<key> settings for the registry client "
                        "(e.g. schema.registry.basic.auth.user.info=user:pass). "
                        "MAILGUARD_REGISTRY_USER_INFO=user:pass in the environment also works.")
    p.add_argument("--single-object", action="store_true",
                   help="write Avro single-object encoding instead of the Confluent framing; no registry")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for delivery (default 60)")
    return p.parse_args()


def subject_strategy(name):
    from confluent_kafka.schema_registry import (
        record_subject_name_strategy,
        topic_record_subject_name_strategy,
        topic_subject_name_strategy,
    )

    return {
        "topic": topic_subject_name_strategy,
        "record": record_subject_name_strategy,
        "topic-record": topic_record_subject_name_strategy,
    }[name]


def field_names(schema_text):
    schema = json.loads(schema_text)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        die("--schema must be an Avro record schema")
    return {f["name"] for f in schema["fields"]}


def main():
    args = parse_args()
    if not args.single_object and not args.registry:
        die("--registry is required (or use --single-object)", 2)
    if args.single_object and (args.no_auto_register or args.use_latest_version):
        die("--no-auto-register/--use-latest-version need a registry; not with --single-object", 2)

    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema_text = load_schema_text(args.schema)
    fields = field_names(schema_text)
    kafka_extra, registry_extra = split_security_props(args.security_props)

    if args.single_object:
        import io

        from fastavro import schemaless_writer

        parsed, fingerprint = parsed_schema_and_fingerprint(schema_text)
        header = SINGLE_OBJECT_MAGIC + fingerprint

        def serialize(record, _ctx):
            buf = io.BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
            return buf.getvalue()
    else:
        from confluent_kafka.schema_registry.avro import AvroSerializer

        serializer = AvroSerializer(
            registry_client(args.registry, registry_extra),
            schema_text,
            conf={
                "auto.register.schemas": not args.no_auto_register,
                "use.latest.version": args.use_latest_version,
                "subject.name.strategy": subject_strategy(args.subject_strategy),
            },
        )

        def serialize(record, ctx):
            return serializer(record, ctx)

    conf = {
        "bootstrap.servers": args.bootstrap,
        # The Java client's partitioner (murmur2) so keys land where mailguard and
        # Java producers put them; librdkafka's default (crc32) would not.
        "partitioner": "murmur2_random",
        "compression.type": args.compression,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    if args.transactional_id:
        conf["transactional.id"] = args.transactional_id
    conf.update(kafka_extra)
    producer = Producer(conf)
    if args.transactional_id:
        producer.init_transactions(args.timeout)
        producer.begin_transaction()

    errors = []
    delivered = 0

    def on_delivery(err, msg, key, schema_id):
        nonlocal delivered
        if err is not None:
            errors.append(f"key {key!r}: {err}")
            return
        delivered += 1
        print(json.dumps({"partition": msg.partition(), "offset": msg.offset(), "key": key,
                          "schema_id": schema_id}), flush=True)

    ctx = SerializationContext(args.topic, MessageField.VALUE)
    bad_lines = 0
    schema_ids = set()
    for n, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "_key" in record:
                key = record.pop("_key")
                if key is not None and not isinstance(key, str):
                    raise ValueError("_key must be a string or null")
            else:
                mailbox = record.get("mailbox")
                if not isinstance(mailbox, str):
                    raise ValueError('no "mailbox" string to derive the key from (or give "_key")')
                key = mailbox.lower()
            unknown = set(record) - fields
            if unknown:
                # fastavro would silently drop them: a typo must not pass unnoticed.
                raise ValueError(f"fields not in the schema: {', '.join(sorted(unknown))}")
            value = serialize(record, ctx)
        except Exception as e:  # noqa: BLE001 - report any bad line and go on
            bad_lines += 1
            note(f"stdin line {n}: {type(e).__name__}: {e}")
            continue
        schema_id = None
        if value[0] == CONFLUENT_MAGIC:
            schema_id = int.from_bytes(value[1:5], "big")
            schema_ids.add(schema_id)
        while True:
            try:
                producer.produce(args.topic, key=None if key is None else key.encode("utf-8"), value=value,
                                 on_delivery=lambda err, msg, k=key, s=schema_id: on_delivery(err, msg, k, s))
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: serve delivery reports, retry
        producer.poll(0)

    try:
        if args.transactional_id:
            if bad_lines or errors:
                producer.abort_transaction(args.timeout)
            else:
                producer.commit_transaction(args.timeout)  # flushes first
        remaining = producer.flush(args.timeout)
    except KafkaException as e:
        errors.append(f"transaction: {e}")
        remaining = 0
    if remaining:
        errors.append(f"{remaining} record(s) not delivered within {args.timeout}s")

    ids = f", schema id(s) {sorted(schema_ids)}" if schema_ids else ""
    aborted = " (transaction aborted)" if args.transactional_id and (bad_lines or errors) else ""
    note(f"delivered {delivered} record(s) to {args.topic}{ids}{aborted}")
    for e in errors:
        note(f"delivery error: {e}")
    if bad_lines:
        note(f"{bad_lines} input line(s) rejected")
    sys.exit(1 if errors or bad_lines else 0)


if __name__ == "__main__":
    main()
