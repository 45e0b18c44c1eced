package registry;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Iterator;
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

  /** Given a running registry, claims are decided in their partition. */
  @Test
  void claimsAreDecidedInTheirPartition() throws Exception {
    String brokers = System.getenv().getOrDefault("REGISTRY_KAFKA_BROKERS", "");
    if (brokers.isEmpty()) {
      if ("true".equals(System.getenv("CI"))) {
        fail("CI=true and REGISTRY_KAFKA_BROKERS is not set: no registry to talk to");
      }
      Assumptions.abort("REGISTRY_KAFKA_BROKERS not set (source the data directory's registry.env of a running `registry dev`)");
    }
    try (RegistryClient c = new RegistryClient(brokers)) {
      int i = 0;
      for (JsonNode v : vectors()) {
        if (i++ < 14 || i > 20) {
          continue;
        }
        String id = RegistryClient.newRequestId();
        String user = UUID.randomUUID().toString();
        String typed = v.get("typed").asText();
        int part = c.produceClaim(id, user, typed, v.get("canonical").asText(), v.get("key").asText(),
            new ObjectMapper().readTree(Path.of("..", "testvectors.json").toFile()).get("policy_version").asInt());
        Map<String, Object> d = c.awaitDecision(id, user, typed, Duration.ofSeconds(60));
        assertNotEquals("invalid", d.get("reason"), d.toString());
        assertEquals(v.get("canonical").asText(), d.get("canonical"), d.toString());
        assertEquals(part, ((Number) d.get("claim_partition")).intValue(), d.toString());
        assertEquals(part, d.get("_partition"), d.toString());
      }
    }
  }
}
