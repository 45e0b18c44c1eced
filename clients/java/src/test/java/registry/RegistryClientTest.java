package registry;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.utils.Utils;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

class RegistryClientTest {
  static JsonNode vectors() throws Exception {
    return new ObjectMapper().readTree(Path.of("..", "testvectors.json").toFile()).get("vectors");
  }

  /** The Java client's own murmur2 and default partitioner agree with the vectors. */
  @Test
  void murmur2AndPartitionsMatchTheVectors() throws Exception {
    for (JsonNode v : vectors()) {
      byte[] key = v.get("key").asText().getBytes(StandardCharsets.UTF_8);
      assertEquals(v.get("key_hex").asText(), HexFormat.of().formatHex(key), v.get("typed").asText());
      assertEquals(v.get("murmur2").asLong(), Integer.toUnsignedLong(Utils.murmur2(key)), v.get("typed").asText());
      for (Iterator<Map.Entry<String, JsonNode>> it = v.get("partitions").fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> e = it.next();
        int n = Integer.parseInt(e.getKey());
        assertEquals(e.getValue().asInt(), BuiltInPartitioner.partitionForKey(key, n), v.get("typed").asText() + " among " + n);
      }
    }
  }

  /**
   * The decision for a claim: request_id and user_id in lowercase canonical
   * form, username exact, claim_partition the acknowledged one, no command;
   * everything else sharing the request_id is passed over.
   */
  @Test
  void isDecisionForMatchesAllFour() {
    String rid = "0B6F2A51-8C3E-4D7A-9E21-5F4C3B2A1D01";
    String user = "7D3F2B0E-5A61-4C1E-9F5B-2B8C1D4E6A01";
    Map<String, Object> mine = new java.util.HashMap<>(Map.of("request_id", rid.toLowerCase(), "user_id", user.toLowerCase(),
        "username", "Alice", "outcome", "registered", "claim_partition", 9));
    assertTrue(RegistryClient.isDecisionFor(mine, rid, user, "Alice", 9));
    assertFalse(RegistryClient.isDecisionFor(mine, rid, user, "Alice", 0), "decided in another partition");
    assertFalse(RegistryClient.isDecisionFor(mine, rid, user, "alice", 9), "username as typed, exact");
    Map<String, Object> conflict = new java.util.HashMap<>(mine);
    conflict.put("user_id", "c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502");
    conflict.put("reason", "request_conflict");
    assertFalse(RegistryClient.isDecisionFor(conflict, rid, user, "Alice", 9), "another payload's request_conflict");
    Map<String, Object> release = new java.util.HashMap<>(mine);
    release.put("command", "release");
    assertFalse(RegistryClient.isDecisionFor(release, rid, user, "Alice", 9), "another command's decision");
  }

  /** The REGISTRY_KAFKA_BROKERS of a running registry; fails under CI=true when unset, else skips. */
  static String brokers() {
    String brokers = System.getenv().getOrDefault("REGISTRY_KAFKA_BROKERS", "");
    if (brokers.isEmpty()) {
      if ("true".equals(System.getenv("CI"))) {
        fail("CI=true and REGISTRY_KAFKA_BROKERS is not set: no registry to talk to");
      }
      Assumptions.abort("REGISTRY_KAFKA_BROKERS not set (source the data directory's registry.env of a running `registry dev`)");
    }
    return brokers;
  }

  /** The API of that registry, for the lookup; `registry dev` listens on 127.0.0.1:8080 unless told otherwise. */
  static String registryUrl() {
    return System.getenv().getOrDefault("REGISTRY_URL", "http://127.0.0.1:8080");
  }

  /** Given a running registry, claims are decided in their partition. */
  @Test
  void claimsAreDecidedInTheirPartition() throws Exception {
    int policyVersion = new ObjectMapper().readTree(Path.of("..", "testvectors.json").toFile()).get("policy_version").asInt();
    try (RegistryClient c = new RegistryClient(brokers())) {
      int i = 0;
      for (JsonNode v : vectors()) {
        if (i++ < 14 || i > 20) {
          continue;
        }
        String id = RegistryClient.newRequestId();
        String user = UUID.randomUUID().toString();
        String typed = v.get("typed").asText();
        int part = c.produceClaim(id, user, typed, v.get("canonical").asText(), v.get("key").asText(), policyVersion);
        Map<String, Object> d = c.awaitDecision(id, user, typed, part, Duration.ofSeconds(60));
        assertNotEquals("invalid", d.get("reason"), d.toString());
        assertEquals(v.get("canonical").asText(), d.get("canonical"), d.toString());
        assertEquals(part, ((Number) d.get("claim_partition")).intValue(), d.toString());
      }
    }
  }

  /**
   * The same payload written first to a wrong partition (as a producer with
   * another partitioner would) is decided invalid there; the claim made
   * through the client, which goes to its key's partition, gets its own
   * decision, registered, not that copy's (docs/events.md, "Consuming
   * decisions").
   */
  @Test
  void aCopyInAWrongPartitionDoesNotAnswerTheClaim() throws Exception {
    String brokers = brokers();
    String name = "java-" + UUID.randomUUID().toString().substring(0, 8);
    Map<String, Object> n = RegistryClient.lookup(registryUrl(), name);
    assertEquals("available", n.get("status"), n.toString());
    String canonical = (String) n.get("canonical");
    String key = (String) n.get("key");
    int right = ((Number) n.get("partition")).intValue();
    int policyVersion = ((Number) n.get("policy_version")).intValue();
    // The client's reader starts first, as a service's long-lived one does,
    // so it reads the wrong copy's decision too; the test writes the copy
    // and watches for its decision with a client of its own.
    try (RegistryClient c = new RegistryClient(brokers); RegistryClient watcher = new RegistryClient(brokers)) {
      int count = watcher.claimsPartitions();
      if (count < 2) {
        fail("claims has one partition: run `registry dev --partitions 12` so that a partition can be wrong");
      }
      assertEquals(right, BuiltInPartitioner.partitionForKey(key.getBytes(StandardCharsets.UTF_8), count), n.toString());
      int wrong = (right + 1) % count;
      String id = RegistryClient.newRequestId();
      String user = UUID.randomUUID().toString();
      assertEquals(wrong, watcher.produceClaimTo(wrong, id, user, name, canonical, key, policyVersion));
      Map<String, Object> copy = watcher.awaitDecision(id, user, name, wrong, Duration.ofSeconds(60));
      assertEquals(List.of("rejected", "invalid"), List.of(copy.get("outcome"), copy.get("reason")), copy.toString());

      Map<String, Object> d = c.claim(id, user, name, canonical, key, policyVersion, Duration.ofSeconds(60));
      assertEquals("registered", d.get("outcome"), d.toString());
      assertEquals(right, ((Number) d.get("claim_partition")).intValue(), d.toString());
      assertEquals(id, d.get("holder_request_id"), d.toString());
    }
  }
}
