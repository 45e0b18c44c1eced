package registry;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
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
 * on since Kafka 3.0 (stated here so that nobody loosens them).
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

  /** Produces a ClaimSubmitted keyed by key; returns its partition. */
  public int produceClaim(String requestId, String userId, String username, String canonical, String key, int policyVersion) throws Exception {
    Map<String, Object> v = new LinkedHashMap<>();
    v.put("request_id", requestId);
    v.put("user_id", userId);
    v.put("username", username);
    v.put("canonical", canonical);
    v.put("key", key);
    v.put("policy_version", policyVersion);
    v.put("submitted_at", Instant.now().toString());
    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(CLAIMS, key.getBytes(StandardCharsets.UTF_8), JSON.writeValueAsBytes(v));
    r.headers().add("event-type", "ClaimSubmitted".getBytes(StandardCharsets.US_ASCII));
    r.headers().add("schema-version", "1".getBytes(StandardCharsets.US_ASCII));
    return producer.send(r).get().partition();
  }

  /** Waits for the decision with this request_id, user_id and username. */
  @SuppressWarnings("unchecked")
  public Map<String, Object> awaitDecision(String requestId, String userId, String username, Duration timeout) throws Exception {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (System.nanoTime() < deadline) {
      for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(500))) {
        Header type = rec.headers().lastHeader("event-type");
        if (type == null) {
          continue;
        }
        String t = new String(type.value(), StandardCharsets.US_ASCII);
        if (!t.equals("UsernameRegistered") && !t.equals("ClaimRejected")) {
          continue;
        }
        Map<String, Object> d = JSON.readValue(rec.value(), Map.class);
        if (requestId.equalsIgnoreCase((String) d.get("request_id")) && userId.equalsIgnoreCase((String) d.get("user_id"))
            && username.equals(d.get("username"))) {
          d.put("_partition", rec.partition());
          return d;
        }
      }
    }
    throw new java.util.concurrent.TimeoutException("no decision for " + requestId);
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
