// Package kafkalaunch starts real Apache Kafka brokers in KRaft mode from
// the Apache Kafka server jars, without Docker.
//
// The jars come from Maven Central: [Jars] runs Maven on the small pom this
// package embeds (maven/pom.xml, org.apache.kafka:kafka_2.13 at [Version],
// the version of the apache/kafka image in docker-compose.yml) and caches
// the resolved classpath per user, so only the first call needs the
// network. [Start] then formats KRaft storage with kafka.tools.StorageTool
// and runs each node as a child `java` process on free 127.0.0.1 ports:
// one combined broker and controller, or a cluster of combined nodes whose
// topics are created with replication factor 3, min.insync.replicas=2 and
// unclean leader election off.
//
// Every JVM runs with a bounded heap, in its own process group, and (on
// Linux) is sent SIGKILL by the kernel if the process that started it
// dies, so a failed or killed test never leaves a broker behind.
// [Cluster.Stop] stops the nodes cleanly; [Node.Kill], [Node.Pause] and
// [Node.Start] are the faults a chaos run injects.
//
// The package needs `java` (17 or later) and, on first use, `mvn`; it is
// Unix-only. It is test and development infrastructure: the product binary
// never imports it.
package kafkalaunch
