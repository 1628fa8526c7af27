import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Writes mailguard's golden Avro test vectors with Apache Avro for Java, the reference
 * implementation.
 *
 * <p>Usage: {@code GoldenVectors <schemas-dir> <samples.json> <out-dir>}. For every
 * {@code <schemas-dir>/*.avsc} it writes {@code <out-dir>/<RecordName>.json} (Parsing Canonical
 * Form, single-object fingerprint, and per sample record its friendly JSON, single-object bytes
 * and plain binary body). It also derives evolved writer schemas of OutboundVerdict and writes
 * them with their vectors and Java's resolved reading (writer = evolved, reader = ours) to
 * {@code <out-dir>/evolution/}.
 *
 * <p>The samples are data ({@code samples.json}, friendly JSON as mailguard's CLI speaks it). The
 * generator refuses a sample set that misses a case: every optional field null and non-null,
 * every array empty and non-empty, every enum symbol, a non-ASCII string, and, where the schema
 * has longs, a negative long and one beyond 32 bits. Everything it writes is deterministic.
 */
public final class GoldenVectors {
  static final String AVRO_VERSION = "1.12.1";
  static final String NAMESPACE = "mailguard.v1";

  static final ObjectMapper MAPPER =
      new ObjectMapper()
          .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
          .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
  static final JsonNodeFactory NODES = JsonNodeFactory.instance;
  static final HexFormat HEX = HexFormat.of();

  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: GoldenVectors <schemas-dir> <samples.json> <out-dir>");
      System.exit(2);
    }
    try {
      run(Path.of(args[0]), Path.of(args[1]), Path.of(args[2]));
    } catch (GoldenException e) {
      System.err.println("GoldenVectors: error: " + e.getMessage());
      System.exit(1);
    }
  }

  /** A problem with the inputs, reported as one line without a stack trace. */
  static final class GoldenException extends Exception {
    GoldenException(String message) {
      super(message);
    }
  }

  static void run(Path schemasDir, Path samplesFile, Path outDir) throws Exception {
    checkAvroVersion();
    JsonNode samples = MAPPER.readTree(Files.readString(samplesFile, StandardCharsets.UTF_8));
    Set<String> unused = new TreeSet<>();
    samples.fieldNames().forEachRemaining(unused::add);

    List<Path> files;
    try (Stream<Path> s = Files.list(schemasDir)) {
      files = s.filter(p -> p.getFileName().toString().endsWith(".avsc")).sorted().toList();
    }
    if (files.isEmpty()) {
      throw new GoldenException("no *.avsc in " + schemasDir);
    }
    Files.createDirectories(outDir.resolve("evolution"));
    Schema verdictV1 = null;
    for (Path file : files) {
      String stem = file.getFileName().toString().replaceFirst("\\.avsc$", "");
      // One parser per file: each .avsc is standalone (BlockState is declared in two of them).
      Schema schema = new Schema.Parser().parse(file.toFile());
      if (!schema.getName().equals(stem) || !NAMESPACE.equals(schema.getNamespace())) {
        throw new GoldenException(
            file + " declares " + schema.getFullName() + ", expected " + NAMESPACE + "." + stem);
      }
      ObjectNode doc = vectors(schema, "schemas/" + file.getFileName(), samples(samples, stem));
      write(outDir.resolve(stem + ".json"), doc);
      unused.remove(stem);
      if (stem.equals("OutboundVerdict")) {
        verdictV1 = schema;
      }
    }

    if (verdictV1 == null) {
      throw new GoldenException("schemas/OutboundVerdict.avsc is missing");
    }
    for (Map.Entry<String, Schema> e : evolvedVerdicts(verdictV1).entrySet()) {
      String name = e.getKey();
      Schema writer = e.getValue();
      Path avsc = outDir.resolve("evolution").resolve(name + ".avsc");
      Files.writeString(avsc, writer.toString(true) + "\n", StandardCharsets.UTF_8);
      ObjectNode doc =
          vectors(writer, "tests/golden/evolution/" + name + ".avsc", samples(samples, name));
      addResolution(doc, writer, verdictV1);
      write(outDir.resolve("evolution").resolve(name + ".json"), doc);
      unused.remove(name);
    }
    if (!unused.isEmpty()) {
      throw new GoldenException(samplesFile + " has samples for unknown schemas " + unused);
    }
  }

  /** Guards against a stray Avro jar on the class path: the vectors name the version. */
  static void checkAvroVersion() throws IOException, GoldenException {
    Properties p = new Properties();
    try (InputStream in =
        Schema.class.getResourceAsStream("/META-INF/maven/org.apache.avro/avro/pom.properties")) {
      if (in == null) {
        throw new GoldenException("cannot tell the Avro version (no pom.properties in its jar)");
      }
      p.load(in);
    }
    if (!AVRO_VERSION.equals(p.getProperty("version"))) {
      throw new GoldenException(
          "Avro " + p.getProperty("version") + " on the class path, expected " + AVRO_VERSION);
    }
  }

  static JsonNode samples(JsonNode all, String name) throws GoldenException {
    JsonNode s = all.get(name);
    if (s == null || !s.isArray() || s.isEmpty()) {
      throw new GoldenException("samples.json has no samples for " + name);
    }
    return s;
  }

  // -------------------------------------------------------------------------------------------
  // Vectors

  static ObjectNode vectors(Schema schema, String schemaFile, JsonNode samples) throws Exception {
    BinaryMessageEncoder<GenericRecord> encoder =
        new BinaryMessageEncoder<>(GenericData.get(), schema);
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(GenericData.get(), schema);
    long fp = SchemaNormalization.parsingFingerprint64(schema);

    ObjectNode doc = NODES.objectNode();
    doc.put("record", schema.getFullName());
    doc.put("schema_file", schemaFile);
    doc.put("generator", "Apache Avro " + AVRO_VERSION + " (Java), interop/java GoldenVectors");
    doc.put("canonical_form", SchemaNormalization.toParsingForm(schema));
    byte[] fpHeader = null;
    ArrayNode records = doc.arrayNode();
    Coverage coverage = new Coverage(schema);
    int i = 0;
    for (JsonNode sample : samples) {
      String where = schema.getName() + " sample " + i++;
      Set<String> keys = new TreeSet<>();
      sample.fieldNames().forEachRemaining(keys::add);
      keys.removeAll(List.of("note", "json", "mailguard_rejects"));
      if (!keys.isEmpty() || !sample.path("note").isTextual() || !sample.has("json")) {
        throw new GoldenException(
            where + ": expected {\"note\", \"json\"[, \"mailguard_rejects\"]}, extra " + keys);
      }
      JsonNode json = sample.get("json");
      GenericRecord rec = (GenericRecord) toAvro(schema, json, "");
      coverage.add(schema, rec);

      ByteBuffer so = encoder.encode(rec);
      byte[] single = new byte[so.remaining()];
      so.get(single);
      byte[] body = body(schema, rec);

      // The single-object layout, spelled out: C3 01, 8-byte LE fingerprint, body.
      byte[] header = Arrays.copyOfRange(single, 0, 10);
      byte[] want = ByteBuffer.allocate(10).order(java.nio.ByteOrder.LITTLE_ENDIAN)
          .put((byte) 0xC3).put((byte) 0x01).putLong(fp).array();
      if (!Arrays.equals(header, want)
          || !Arrays.equals(Arrays.copyOfRange(single, 10, single.length), body)) {
        throw new GoldenException(where + ": single-object bytes are not C3 01 + LE fp + body");
      }
      fpHeader = Arrays.copyOfRange(single, 2, 10);

      // Java reads its own bytes back to the same friendly JSON (so `json` is exact).
      JsonNode back = toJson(schema, decoder.decode(single));
      if (!MAPPER.writeValueAsString(back).equals(MAPPER.writeValueAsString(json))) {
        throw new GoldenException(where + ": round trip changed the record: " + json + " -> " + back);
      }

      ObjectNode r = records.addObject();
      r.put("note", sample.get("note").asText());
      if (sample.has("mailguard_rejects")) {
        r.set("mailguard_rejects", sample.get("mailguard_rejects"));
      }
      r.set("json", back);
      r.put("single_object_hex", HEX.formatHex(single));
      r.put("body_hex", HEX.formatHex(body));
    }
    coverage.check(schema.getName());
    doc.put("fingerprint_hex", HEX.formatHex(fpHeader));
    doc.put("fingerprint_u64", String.format("0x%016x", fp));
    doc.set("records", records);
    return doc;
  }

  static byte[] body(Schema schema, GenericRecord rec) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
    new GenericDatumWriter<GenericRecord>(schema).write(rec, enc);
    enc.flush();
    return out.toByteArray();
  }

  /**
   * Adds to every record Java's reading of its single-object bytes by a reader that holds
   * {@code reader} (mailguard's schema) and knows {@code writer} — Avro schema resolution as the
   * reference implementation does it (field by name, skipped writer fields, enum default).
   */
  static void addResolution(ObjectNode doc, Schema writer, Schema reader) throws Exception {
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(GenericData.get(), reader);
    decoder.addSchema(writer);
    doc.put("reader_schema_file", "schemas/" + reader.getName() + ".avsc");
    doc.put(
        "reader_fingerprint_u64",
        String.format("0x%016x", SchemaNormalization.parsingFingerprint64(reader)));
    for (JsonNode r : doc.get("records")) {
      byte[] single = HEX.parseHex(r.get("single_object_hex").asText());
      ((ObjectNode) r).set("resolved", toJson(reader, decoder.decode(single)));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Evolved writer schemas of OutboundVerdict (what a newer gateway might write)

  static Map<String, Schema> evolvedVerdicts(Schema v1) {
    Map<String, Schema> out = new LinkedHashMap<>();
    Schema.Field spamScore =
        new Schema.Field(
            "spam_score",
            Schema.createUnion(Schema.create(Schema.Type.NULL), Schema.create(Schema.Type.DOUBLE)),
            "Spam score of the message, if the gateway computed one (added in v2).",
            Schema.Field.NULL_DEFAULT_VALUE);

    // v2: one optional field appended; the reader skips it.
    List<Schema.Field> v2 = new ArrayList<>();
    for (Schema.Field f : v1.getFields()) {
      v2.add(new Schema.Field(f, f.schema()));
    }
    v2.add(new Schema.Field(spamScore, spamScore.schema()));
    out.put("OutboundVerdict_v2", record(v1, v2));

    // v2b: v2 with the fields in another order (the new field in the middle, so a reader must
    // skip it between fields it reads) and Verdict with a new symbol QUARANTINE inserted
    // before SPAM, so every symbol after it has another index than in v1 (resolution is by
    // name; QUARANTINE is unknown to the reader and resolves to the enum default CLEAN).
    Schema verdict = v1.getField("verdict").schema();
    List<String> symbols = new ArrayList<>(verdict.getEnumSymbols());
    symbols.add(symbols.indexOf("SPAM"), "QUARANTINE");
    Schema verdict2b =
        Schema.createEnum(
            verdict.getName(), verdict.getDoc(), verdict.getNamespace(), symbols,
            verdict.getEnumDefault());
    List<Schema.Field> v2b = new ArrayList<>();
    for (String name :
        List.of("verdict", "mailbox", "spam_score", "gateway_id", "sent_at", "message_id",
            "recipient_count", "tenant_id")) {
      Schema.Field f = name.equals("spam_score") ? spamScore : v1.getField(name);
      v2b.add(new Schema.Field(f, name.equals("verdict") ? verdict2b : f.schema()));
    }
    if (v2b.size() != v2.size()) {
      throw new IllegalStateException("v2b must hold exactly the fields of v2");
    }
    out.put("OutboundVerdict_v2b", record(v1, v2b));
    return out;
  }

  static Schema record(Schema like, List<Schema.Field> fields) {
    return Schema.createRecord(like.getName(), like.getDoc(), like.getNamespace(), false, fields);
  }

  // -------------------------------------------------------------------------------------------
  // Friendly JSON (src/codec/json.rs): plain values, optional fields value or null, enums as
  // symbol strings, timestamps integer ms. Samples must spell every field (no defaults), so the
  // JSON in a vector is exactly what was asked for.

  static Object toAvro(Schema s, JsonNode j, String path) throws GoldenException {
    String at = path.isEmpty() ? "record" : path;
    switch (s.getType()) {
      case NULL:
        if (j.isNull()) return null;
        break;
      case BOOLEAN:
        if (j.isBoolean()) return j.booleanValue();
        break;
      case INT:
        if (j.isIntegralNumber() && j.canConvertToInt()) return j.intValue();
        break;
      case LONG:
        if (j.isIntegralNumber() && j.canConvertToLong()) return j.longValue();
        break;
      case DOUBLE:
        if (j.isNumber()) return j.doubleValue();
        break;
      case STRING:
        if (j.isTextual()) return j.textValue();
        break;
      case ENUM:
        if (j.isTextual() && s.hasEnumSymbol(j.textValue())) {
          return new GenericData.EnumSymbol(s, j.textValue());
        }
        break;
      case ARRAY:
        if (j.isArray()) {
          GenericData.Array<Object> a = new GenericData.Array<>(j.size(), s);
          int i = 0;
          for (JsonNode x : j) a.add(toAvro(s.getElementType(), x, at + "[" + i++ + "]"));
          return a;
        }
        break;
      case UNION:
        if (j.isNull()) {
          for (Schema b : s.getTypes()) if (b.getType() == Schema.Type.NULL) return null;
          break;
        }
        // The first non-null branch the value fits, like json.rs.
        for (Schema b : s.getTypes()) {
          if (b.getType() == Schema.Type.NULL) continue;
          try {
            return toAvro(b, j, path);
          } catch (GoldenException e) {
            // try the next branch
          }
        }
        break;
      case RECORD:
        if (j.isObject()) {
          Set<String> extra = new LinkedHashSet<>();
          j.fieldNames().forEachRemaining(extra::add);
          GenericData.Record r = new GenericData.Record(s);
          for (Schema.Field f : s.getFields()) {
            String sub = path.isEmpty() ? f.name() : path + "." + f.name();
            if (!j.has(f.name())) throw new GoldenException(sub + ": missing (spell every field)");
            r.put(f.pos(), toAvro(f.schema(), j.get(f.name()), sub));
            extra.remove(f.name());
          }
          if (!extra.isEmpty()) throw new GoldenException(at + ": unknown fields " + extra);
          return r;
        }
        break;
      default:
        throw new GoldenException(at + ": unsupported schema type " + s.getType());
    }
    throw new GoldenException(at + ": " + j + " does not fit " + s);
  }

  static JsonNode toJson(Schema s, Object v) {
    switch (s.getType()) {
      case NULL:
        return NODES.nullNode();
      case BOOLEAN:
        return NODES.booleanNode((Boolean) v);
      case INT:
        return NODES.numberNode((Integer) v);
      case LONG:
        return NODES.numberNode((Long) v);
      case DOUBLE:
        return NODES.numberNode((Double) v);
      case STRING:
      case ENUM:
        return NODES.textNode(v.toString());
      case ARRAY: {
        ArrayNode a = NODES.arrayNode();
        for (Object x : (List<?>) v) a.add(toJson(s.getElementType(), x));
        return a;
      }
      case UNION:
        return toJson(s.getTypes().get(GenericData.get().resolveUnion(s, v)), v);
      case RECORD: {
        ObjectNode o = NODES.objectNode();
        GenericRecord r = (GenericRecord) v;
        for (Schema.Field f : s.getFields()) o.set(f.name(), toJson(f.schema(), r.get(f.pos())));
        return o;
      }
      default:
        throw new IllegalArgumentException("unsupported schema type " + s.getType());
    }
  }

  // -------------------------------------------------------------------------------------------
  // Coverage of the samples

  static final class Coverage {
    final Map<String, Set<String>> seen = new LinkedHashMap<>();
    final Map<String, Set<String>> needed = new LinkedHashMap<>();

    Coverage(Schema schema) {
      for (Schema.Field f : schema.getFields()) need(f.name(), f.schema());
      need("<record>", Schema.create(Schema.Type.STRING)); // some string is non-ASCII
    }

    void need(String field, Schema s) {
      Set<String> n = needed.computeIfAbsent(field, k -> new TreeSet<>());
      switch (s.getType()) {
        case UNION:
          for (Schema b : s.getTypes()) {
            if (b.getType() == Schema.Type.NULL) n.add("null");
            else {
              n.add("non-null");
              need(field, b);
            }
          }
          break;
        case ENUM:
          for (String sym : s.getEnumSymbols()) n.add("symbol " + sym);
          break;
        case ARRAY:
          n.add("empty");
          n.add("non-empty");
          break;
        case LONG:
          needed.computeIfAbsent("<record>", k -> new TreeSet<>()).addAll(
              List.of("negative long", "long beyond 32 bits"));
          break;
        case STRING:
          needed.computeIfAbsent("<record>", k -> new TreeSet<>()).add("non-ASCII string");
          break;
        default:
          break;
      }
    }

    void add(Schema schema, GenericRecord r) {
      for (Schema.Field f : schema.getFields()) see(f.name(), f.schema(), r.get(f.pos()));
    }

    void see(String field, Schema s, Object v) {
      Set<String> n = seen.computeIfAbsent(field, k -> new TreeSet<>());
      Set<String> rec = seen.computeIfAbsent("<record>", k -> new TreeSet<>());
      switch (s.getType()) {
        case UNION: {
          Schema b = s.getTypes().get(GenericData.get().resolveUnion(s, v));
          n.add(b.getType() == Schema.Type.NULL ? "null" : "non-null");
          if (b.getType() != Schema.Type.NULL) see(field, b, v);
          break;
        }
        case ENUM:
          n.add("symbol " + v);
          break;
        case ARRAY:
          n.add(((List<?>) v).isEmpty() ? "empty" : "non-empty");
          for (Object x : (List<?>) v) see(field, s.getElementType(), x);
          break;
        case LONG: {
          long x = (Long) v;
          if (x < 0) rec.add("negative long");
          if (x > 0xFFFF_FFFFL || x < -0x1_0000_0000L) rec.add("long beyond 32 bits");
          break;
        }
        case STRING:
          if (!v.toString().chars().allMatch(c -> c < 0x80)) rec.add("non-ASCII string");
          break;
        default:
          break;
      }
    }

    void check(String name) throws GoldenException {
      List<String> missing = new ArrayList<>();
      for (Map.Entry<String, Set<String>> e : needed.entrySet()) {
        Set<String> m = new TreeSet<>(e.getValue());
        m.removeAll(seen.getOrDefault(e.getKey(), Set.of()));
        for (String what : m) missing.add(e.getKey() + ": " + what);
      }
      if (!missing.isEmpty()) {
        throw new GoldenException("samples of " + name + " do not cover " + missing);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Output: stable, readable JSON ("key": value, two-space indent, LF, trailing newline).

  static void write(Path file, JsonNode doc) throws IOException {
    DefaultIndenter lf = new DefaultIndenter("  ", "\n");
    DefaultPrettyPrinter pp =
        new DefaultPrettyPrinter(
                Separators.createDefaultInstance()
                    .withObjectFieldValueSpacing(Separators.Spacing.AFTER)
                    .withObjectEmptySeparator("")
                    .withArrayEmptySeparator(""))
            .withObjectIndenter(lf)
            .withArrayIndenter(lf);
    String text = MAPPER.writer(pp).writeValueAsString(doc) + "\n";
    Files.writeString(file, text, StandardCharsets.UTF_8);
  }
}
