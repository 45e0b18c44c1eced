package registry;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Produces claims and reads decisions, written from docs/events.md. The
 * Java client's defaults are what the registry needs: its default
 * partitioner is murmur2 over the key bytes, acks=all and idempotence are
 * on since Kafka 3.0 (stated here so that nobody loosens them). The
 * decision for a claim is the first on registrations with its request_id,
 * user_id and username in the partition the produce acknowledgement names;
 * canonical form and key come from the registry's lookup.
 */
public final class RegistryClient implements AutoCloseable {
  public static final String CLAIMS = "claims";
  public static final String REGISTRATIONS = "registrations";
  private static final ObjectMapper JSON = new ObjectMapper();

  private final KafkaProducer<byte[], byte[]> producer;
  private final KafkaConsumer<byte[], byte[]> consumer;

  public RegistryClient(String brokers) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "gzip");
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    producer = new KafkaProducer<>(p);
    Properties c = new Properties();
    c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
    c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
    consumer = new KafkaConsumer<>(c);
    // Read decisions from the current end: a decision is always written
    // after its claim, so none produced after this is missed.
    List<TopicPartition> parts = new ArrayList<>();
    for (PartitionInfo pi : consumer.partitionsFor(REGISTRATIONS, Duration.ofSeconds(30))) {
      parts.add(new TopicPartition(REGISTRATIONS, pi.partition()));
    }
    consumer.assign(parts);
    consumer.seekToEnd(parts);
    for (TopicPartition tp : parts) {
      consumer.position(tp, Duration.ofSeconds(30));
    }
  }

  /**
   * Claims a name: produces the claim and waits for its decision, the one
   * made in the partition the produce acknowledgement names. Reading
   * started when this client was made, so no decision is missed.
   */
  public Map<String, Object> claim(String requestId, String userId, String username, String canonical, String key, int policyVersion,
      Duration timeout) throws Exception {
    int partition = produceClaim(requestId, userId, username, canonical, key, policyVersion);
    return awaitDecision(requestId, userId, username, partition, timeout);
  }

  /**
   * Produces a ClaimSubmitted keyed by key with the default (murmur2)
   * partitioner and waits for its acknowledgement; returns the partition
   * the record was written to, from the acknowledgement's RecordMetadata.
   */
  public int produceClaim(String requestId, String userId, String username, String canonical, String key, int policyVersion) throws Exception {
    return produceClaimTo(null, requestId, userId, username, canonical, key, policyVersion);
  }

  /** As produceClaim, to an explicit partition (null: the partitioner's); for tests that need a wrong one. */
  int produceClaimTo(Integer partition, String requestId, String userId, String username, String canonical, String key, int policyVersion)
      throws Exception {
    Map<String, Object> v = new LinkedHashMap<>();
    v.put("request_id", requestId);
    v.put("user_id", userId);
    v.put("username", username);
    v.put("canonical", canonical);
    v.put("key", key);
    v.put("policy_version", policyVersion);
    v.put("submitted_at", Instant.now().toString());
    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(CLAIMS, partition, key.getBytes(StandardCharsets.UTF_8), JSON.writeValueAsBytes(v));
    r.headers().add("event-type", "ClaimSubmitted".getBytes(StandardCharsets.US_ASCII));
    r.headers().add("schema-version", "1".getBytes(StandardCharsets.US_ASCII));
    return producer.send(r).get().partition();
  }

  /**
   * Waits for the decision of the claim with this payload written to
   * partition: the first decision read that {@link #isDecisionFor matches};
   * later ones are copies. Throws TimeoutException when none comes within
   * timeout, IllegalStateException on a schema-version above 1.
   */
  @SuppressWarnings("unchecked")
  public Map<String, Object> awaitDecision(String requestId, String userId, String username, int partition, Duration timeout) throws Exception {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (System.nanoTime() < deadline) {
      for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(500))) {
        String t = header(rec, "event-type", "");
        if (!t.equals("UsernameRegistered") && !t.equals("ClaimRejected")) {
          continue;
        }
        String version = header(rec, "schema-version", "1");
        if (!version.equals("1")) {
          throw new IllegalStateException("decision with schema-version " + version + "; this client reads 1");
        }
        Map<String, Object> d = JSON.readValue(rec.value(), Map.class);
        if (isDecisionFor(d, requestId, userId, username, partition)) {
          return d;
        }
      }
    }
    throw new TimeoutException("no decision for " + requestId + " in partition " + partition + " within " + timeout);
  }

  /**
   * Whether decision d answers the claim with this payload written to
   * partition (docs/events.md, "Consuming decisions"): the same request_id
   * and user_id in lowercase canonical form, the same username as typed
   * (exact), decided in that partition, and a claim's decision (no
   * command). A request_conflict for another payload, or the decision for
   * a copy written to another partition (invalid there), is not.
   */
  static boolean isDecisionFor(Map<String, Object> d, String requestId, String userId, String username, int partition) {
    return canonicalId(requestId).equals(d.get("request_id")) && canonicalId(userId).equals(d.get("user_id"))
        && username.equals(d.get("username")) && d.get("claim_partition") instanceof Number p && p.intValue() == partition
        && !d.containsKey("command");
  }

  /** A UUID in its lowercase hyphenated form, as decisions carry it; anything else as written. */
  static String canonicalId(String id) {
    try {
      return id.length() == 36 ? UUID.fromString(id).toString() : id; // fromString alone also takes "1-1-1-1-1"
    } catch (IllegalArgumentException e) {
      return id;
    }
  }

  private static String header(ConsumerRecord<byte[], byte[]> rec, String name, String missing) {
    Header h = rec.headers().lastHeader(name);
    return h == null ? missing : new String(h.value(), StandardCharsets.US_ASCII);
  }

  /**
   * The registry's answer about a name, from its HTTP lookup
   * (GET /v1/usernames/{username} at url, the API's base URL):
   * canonical, key, partition, policy_version and status, the values a
   * claim must carry. Every status below 500 (404 available among them)
   * has a JSON body; a 5xx throws IOException.
   */
  @SuppressWarnings("unchecked")
  public static Map<String, Object> lookup(String url, String username) throws Exception {
    URI u = URI.create(url.replaceAll("/+$", "") + "/v1/usernames/" + URLEncoder.encode(username, StandardCharsets.UTF_8).replace("+", "%20"));
    HttpResponse<byte[]> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(u).timeout(Duration.ofSeconds(30)).build(),
        HttpResponse.BodyHandlers.ofByteArray());
    if (r.statusCode() >= 500) {
      throw new IOException("lookup of " + username + ": HTTP " + r.statusCode());
    }
    return JSON.readValue(r.body(), Map.class);
  }

  /** The number of claims partitions. */
  public int claimsPartitions() {
    return producer.partitionsFor(CLAIMS).size();
  }

  public static String newRequestId() {
    return UUID.randomUUID().toString();
  }

  @Override
  public void close() {
    producer.close();
    consumer.close();
  }
}
