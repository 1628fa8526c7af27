import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Reader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.AppInfoParser;

/**
 * Produces OutboundVerdict records (or records of any Avro record schema) to Kafka the way a
 * Java gateway would: Kafka's own Java client and Apache Avro for Java, nothing of mailguard's.
 * mailguard's tests use it to prove that what an independent implementation writes (single-object
 * Avro, zstd-compressed batches, keys placed by the Java client's partitioner) is processed.
 *
 * <p>Input: one JSON object per line on stdin, mailguard's "friendly JSON" (the record's fields
 * by name; optional fields may be omitted and take their schema default, e.g. null), for
 * example {@code {"message_id":"m1","tenant_id":"acme","mailbox":"Bob@Example.com",
 * "sent_at":1767225600000,"verdict":"SPAM"}}. The key is the {@code mailbox} field lower-cased
 * (Locale.ROOT) as a UTF-8 string, unless the line has a {@code "_key"} member (a string, or null
 * for no key) — the same convention as interop/python/produce_verdicts.py.
 *
 * <p>Values are Avro single-object encoded ({@code BinaryMessageEncoder}: C3 01, the schema's
 * CRC-64-AVRO fingerprint little-endian, the body). The producer runs with acks=all, idempotence
 * and the client's default partitioner (murmur2 of the serialized key; mailguard relies on it).
 *
 * <p>Prints one JSON line per acknowledged record on stdout ({@code
 * {"partition":…,"offset":…,"key":…}}) and a summary on stderr. Exit status: 0 when every line
 * was produced and acknowledged; 1 on any bad line or failed record (reported on stderr, after
 * flushing and closing the producer); 2 on usage errors. Run it through scripts/java-produce.
 */
public final class ProduceVerdicts {
  static final String PROG = "ProduceVerdicts";
  static final String KAFKA_VERSION = "4.1.1";
  static final String DEFAULT_SCHEMA = "schemas/OutboundVerdict.avsc";
  static final List<String> COMPRESSIONS = List.of("none", "gzip", "snappy", "lz4", "zstd");

  // System.out/err would encode with the platform charset (ASCII under LANG=C): a non-ASCII key
  // or message must come out as UTF-8, whatever the locale.
  static final PrintStream OUT =
      new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
  static final PrintStream ERR =
      new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);

  /** A problem with the command line (exit 2). */
  static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  /** A problem that ends the run before anything is produced (exit 1), reported in one line. */
  static final class FatalException extends Exception {
    FatalException(String message) {
      super(message);
    }
  }

  static final String USAGE =
      String.join(
          "\n",
          "usage: " + PROG + " --topic T [--bootstrap HOST:PORT[,...]] [--schema FILE]",
          "       [--compression none|gzip|snappy|lz4|zstd] [--producer-config FILE] [--timeout S]",
          "",
          "Reads JSON lines (friendly JSON of the record; optional fields may be omitted) on stdin,",
          "writes each as an Avro single-object encoded value, key = \"mailbox\" lower-cased (or the",
          "line's \"_key\": a string, or null for no key), and prints one line per acknowledged",
          "record: {\"partition\":…,\"offset\":…,\"key\":…}.",
          "",
          "  --bootstrap B        bootstrap servers (required unless the --producer-config file",
          "                       sets bootstrap.servers; this option wins)",
          "  --topic T            topic to produce to",
          "  --schema FILE        writer schema, an Avro record (default " + DEFAULT_SCHEMA + ")",
          "  --compression C      compression.type (default zstd, or the config file's)",
          "  --producer-config F  Java properties for the producer, e.g. security.protocol,",
          "                       sasl.*, ssl.* (applied over the defaults, under the options)",
          "  --timeout S          seconds a record may take to be acknowledged, and send() may",
          "                       block waiting for metadata (default 60)",
          "",
          "Fixed: acks=all, enable.idempotence=true, the default partitioner (murmur2 of the",
          "key), String/ByteArray serializers; a config file may not change them.");

  public static void main(String[] args) {
    int code;
    try {
      code = run(args);
    } catch (UsageException e) {
      ERR.println(PROG + ": error: " + e.getMessage());
      ERR.println(USAGE);
      code = 2;
    } catch (FatalException e) {
      ERR.println(PROG + ": error: " + e.getMessage());
      code = 1;
    } catch (Exception e) {
      ERR.println(PROG + ": error: " + describe(e));
      code = 1;
    }
    OUT.flush();
    ERR.flush();
    System.exit(code);
  }

  // -------------------------------------------------------------------------------------------
  // Command line

  static final class Options {
    String bootstrap;
    String topic;
    Path schema;
    String compression;
    Path producerConfig;
    long timeoutMs = 60_000;
  }

  static Options parse(String[] args) throws UsageException {
    Options o = new Options();
    List<String> a = new ArrayList<>(List.of(args));
    for (int i = 0; i < a.size(); i++) {
      String arg = a.get(i);
      if (arg.equals("-h") || arg.equals("--help")) {
        OUT.println(USAGE);
        System.exit(0);
      }
      String name = arg;
      String value = null;
      int eq = arg.indexOf('=');
      if (arg.startsWith("--") && eq > 0) {
        name = arg.substring(0, eq);
        value = arg.substring(eq + 1);
      }
      if (!List.of("--bootstrap", "--topic", "--schema", "--compression", "--producer-config",
              "--timeout").contains(name)) {
        throw new UsageException("unknown argument: " + arg);
      }
      if (value == null) {
        if (i + 1 >= a.size()) throw new UsageException(name + " needs a value");
        value = a.get(++i);
      }
      switch (name) {
        case "--bootstrap" -> o.bootstrap = value;
        case "--topic" -> o.topic = value;
        case "--schema" -> o.schema = Path.of(value);
        case "--compression" -> {
          if (!COMPRESSIONS.contains(value)) {
            throw new UsageException("--compression must be one of " + COMPRESSIONS + ", not " + value);
          }
          o.compression = value;
        }
        case "--producer-config" -> o.producerConfig = Path.of(value);
        case "--timeout" -> {
          long s;
          try {
            s = Long.parseLong(value);
          } catch (NumberFormatException e) {
            s = -1;
          }
          if (s < 1 || s > 86_400) throw new UsageException("--timeout must be 1..86400 seconds");
          o.timeoutMs = s * 1000;
        }
        default -> throw new IllegalStateException(name);
      }
    }
    if (o.topic == null || o.topic.isEmpty()) throw new UsageException("--topic is required");
    if (o.schema == null) {
      // scripts/java-produce passes the repository root: the default works from any directory.
      String root = System.getProperty("mailguard.root");
      o.schema = root == null ? Path.of(DEFAULT_SCHEMA) : Path.of(root, DEFAULT_SCHEMA);
    }
    return o;
  }

  // -------------------------------------------------------------------------------------------
  // Producer configuration

  /**
   * Settings this tool's promise rests on (what a careful gateway does, and murmur2 placement
   * of keys, which mailguard relies on). A config file may repeat them but not change them.
   */
  static final Map<String, String> FIXED = new LinkedHashMap<>();

  static {
    FIXED.put(ProducerConfig.ACKS_CONFIG, "all");
    FIXED.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    FIXED.put(ProducerConfig.PARTITIONER_IGNORE_KEYS_CONFIG, "false");
    FIXED.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    FIXED.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
  }

  static boolean sameSetting(String key, String fixed, String given) {
    String g = given.trim();
    if (key.equals(ProducerConfig.ACKS_CONFIG)) return g.equals("all") || g.equals("-1");
    if (fixed.equals("true") || fixed.equals("false")) return g.equalsIgnoreCase(fixed);
    return g.equals(fixed);
  }

  static Properties producerProperties(Options o) throws Exception {
    Properties p = new Properties();
    p.put(ProducerConfig.CLIENT_ID_CONFIG, "mailguard-java-produce");
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd");
    // --timeout bounds the whole run: metadata waits in send() and each record's delivery.
    // delivery.timeout.ms must be >= linger.ms + request.timeout.ms, hence the explicit values.
    p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
    p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Long.toString(o.timeoutMs));
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, Long.toString(o.timeoutMs));
    p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, Long.toString(Math.min(30_000, o.timeoutMs / 2)));

    if (o.producerConfig != null) {
      Properties file = new Properties();
      try (Reader r = Files.newBufferedReader(o.producerConfig, StandardCharsets.UTF_8)) {
        file.load(r);
      } catch (IOException e) {
        throw new FatalException("cannot read --producer-config " + o.producerConfig + ": " + e);
      }
      Set<String> known = ProducerConfig.configNames();
      for (String key : new TreeSet<>(file.stringPropertyNames())) {
        String v = file.getProperty(key);
        if (key.equals(ProducerConfig.PARTITIONER_CLASS_CONFIG)) {
          throw new FatalException(o.producerConfig + ": partitioner.class may not be set: "
              + "keys must be placed by the default partitioner (murmur2), as mailguard expects");
        }
        if (key.equals(ProducerConfig.TRANSACTIONAL_ID_CONFIG)) {
          throw new FatalException(o.producerConfig + ": transactional.id is not supported");
        }
        if (FIXED.containsKey(key) && !sameSetting(key, FIXED.get(key), v)) {
          throw new FatalException(o.producerConfig + ": " + key + "=" + v + " conflicts with "
              + PROG + "'s fixed " + key + "=" + FIXED.get(key));
        }
        if (!known.contains(key)) {
          // Kafka would ignore it silently; a typo in a security setting must not pass unnoticed.
          ERR.println(PROG + ": warning: " + o.producerConfig + ": " + key
              + " is not a Kafka producer setting (ignored by the client)");
        }
        p.put(key, v);
      }
    }
    if (o.bootstrap != null) p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrap);
    if (o.compression != null) p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, o.compression);
    p.putAll(FIXED);
    if (p.getProperty(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, "").isBlank()) {
      throw new UsageException("--bootstrap is required (or bootstrap.servers in --producer-config)");
    }
    return p;
  }

  // -------------------------------------------------------------------------------------------
  // Input

  /** A line that cannot be produced; reported, the run goes on, the exit status is 1. */
  static final class BadLine extends Exception {
    BadLine(String message) {
      super(message);
    }
  }

  /** A record of {@code schema} from friendly JSON; omitted fields take their default. */
  static GenericRecord record(Schema schema, ObjectNode j) throws BadLine {
    Set<String> extra = new LinkedHashSet<>();
    j.fieldNames().forEachRemaining(extra::add);
    GenericData.Record r = new GenericData.Record(schema);
    for (Schema.Field f : schema.getFields()) {
      extra.remove(f.name());
      JsonNode v = j.get(f.name());
      if (v == null) {
        if (!f.hasDefaultValue()) throw new BadLine(f.name() + ": missing (it has no default)");
        r.put(f.pos(), GenericData.get().deepCopy(f.schema(), GenericData.get().getDefaultValue(f)));
        continue;
      }
      try {
        // The same friendly-JSON reading the golden vectors are written with.
        r.put(f.pos(), GoldenVectors.toAvro(f.schema(), v, f.name()));
      } catch (GoldenVectors.GoldenException e) {
        throw new BadLine(e.getMessage());
      }
    }
    if (!extra.isEmpty()) throw new BadLine("fields not in the schema: " + extra);
    return r;
  }

  static Schema loadSchema(Path file) throws FatalException {
    Schema s;
    try {
      s = new Schema.Parser().parse(file.toFile());
    } catch (IOException | RuntimeException e) {
      throw new FatalException("cannot read the schema " + file + ": " + describe(e));
    }
    if (s.getType() != Schema.Type.RECORD) {
      throw new FatalException(file + " is not an Avro record schema");
    }
    return s;
  }

  /** Guards against stray jars on the class path: the tool names the versions it speaks for. */
  static void checkVersions() throws Exception {
    try {
      GoldenVectors.checkAvroVersion();
    } catch (GoldenVectors.GoldenException e) {
      throw new FatalException(e.getMessage());
    }
    if (!KAFKA_VERSION.equals(AppInfoParser.getVersion())) {
      throw new FatalException("kafka-clients " + AppInfoParser.getVersion()
          + " on the class path, expected " + KAFKA_VERSION);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Run

  static int run(String[] args) throws Exception {
    Options o = parse(args);
    checkVersions();
    Schema schema = loadSchema(o.schema);
    Properties props = producerProperties(o);
    BinaryMessageEncoder<GenericRecord> encoder =
        new BinaryMessageEncoder<>(GenericData.get(), schema);
    boolean hasMailbox =
        schema.getField("mailbox") != null
            && schema.getField("mailbox").schema().getType() == Schema.Type.STRING;

    List<String> failures = Collections.synchronizedList(new ArrayList<>());
    AtomicLong acked = new AtomicLong();
    long lines = 0;
    long badLines = 0;
    long sent = 0;
    String compression = props.getProperty(ProducerConfig.COMPRESSION_TYPE_CONFIG);

    KafkaProducer<String, byte[]> producer;
    try {
      producer = new KafkaProducer<>(props);
    } catch (RuntimeException e) {
      throw new FatalException("cannot create the Kafka producer: " + describe(e));
    }
    try {
      BufferedReader in =
          new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
      String line;
      while ((line = in.readLine()) != null) {
        lines++;
        if (line.isBlank()) continue;
        String key;
        byte[] value;
        try {
          JsonNode j;
          try {
            j = GoldenVectors.MAPPER.readTree(line);
          } catch (JsonProcessingException e) {
            throw new BadLine("not JSON: " + e.getOriginalMessage());
          }
          if (!(j instanceof ObjectNode obj)) throw new BadLine("not a JSON object");
          if (obj.has("_key")) {
            JsonNode k = obj.remove("_key");
            if (!k.isNull() && !k.isTextual()) throw new BadLine("_key must be a string or null");
            key = k.isNull() ? null : k.textValue();
          } else {
            JsonNode m = obj.get("mailbox");
            if (!hasMailbox || m == null || !m.isTextual()) {
              throw new BadLine("no \"mailbox\" string to derive the key from (or give \"_key\")");
            }
            key = m.textValue().toLowerCase(Locale.ROOT);
          }
          ByteBuffer buf = encoder.encode(record(schema, obj));
          value = new byte[buf.remaining()];
          buf.get(value);
        } catch (BadLine e) {
          badLines++;
          ERR.println(PROG + ": stdin line " + lines + ": " + e.getMessage());
          continue;
        }
        long n = lines;
        String k = key;
        try {
          producer.send(
              new ProducerRecord<>(o.topic, key, value),
              (meta, err) -> {
                if (err != null) {
                  failures.add("stdin line " + n + " (key " + quote(k) + "): " + describe(err));
                  return;
                }
                acked.incrementAndGet();
                ObjectNode out = GoldenVectors.NODES.objectNode();
                out.put("partition", meta.partition());
                out.put("offset", meta.offset());
                out.put("key", k);
                OUT.println(out.toString());
              });
          sent++;
        } catch (RuntimeException e) {
          // send() throws (rather than calling back) when the producer cannot go on at all,
          // e.g. after a fatal error: every later record would fail the same way.
          failures.add("stdin line " + n + " (key " + quote(k) + "): " + describe(e));
          break;
        }
      }
      producer.flush();
    } finally {
      try {
        producer.close(Duration.ofMillis(o.timeoutMs));
      } catch (RuntimeException e) {
        failures.add("closing the producer: " + describe(e));
      }
    }

    ERR.println(PROG + ": " + acked.get() + " of " + sent + " record(s) acknowledged on "
        + o.topic + " (compression " + compression + ", schema " + schema.getFullName()
        + String.format(", values start c301%016x)", Long.reverseBytes(
            SchemaNormalization.parsingFingerprint64(schema))));
    synchronized (failures) {
      for (String f : failures) ERR.println(PROG + ": error: " + f);
    }
    if (badLines > 0) ERR.println(PROG + ": error: " + badLines + " input line(s) rejected");
    if (acked.get() != sent && failures.isEmpty()) {
      ERR.println(PROG + ": error: " + (sent - acked.get()) + " record(s) not acknowledged");
    }
    return failures.isEmpty() && badLines == 0 && acked.get() == sent ? 0 : 1;
  }

  static String quote(String s) {
    return s == null ? "null" : GoldenVectors.NODES.textNode(s).toString();
  }

  /** An exception and its causes in one line (Kafka wraps the interesting part). */
  static String describe(Throwable e) {
    StringBuilder b = new StringBuilder();
    Set<Throwable> seen = new java.util.HashSet<>();
    for (Throwable t = e; t != null && seen.add(t); t = t.getCause()) {
      if (b.length() > 0) b.append(": caused by ");
      b.append(t.getClass().getSimpleName());
      if (t.getMessage() != null) b.append(": ").append(t.getMessage());
    }
    return b.toString();
  }
}
