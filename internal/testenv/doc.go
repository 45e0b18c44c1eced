// Package testenv gives integration tests real dependencies: a PostgreSQL
// database per test and a Kafka-protocol broker per test.
//
// Where each dependency comes from is decided once per test binary, at the
// first Database or Kafka call:
//
//  1. TEST_DATABASE_URL and TEST_KAFKA_BROKERS, when set, win for their
//     dependency.
//  2. Otherwise, with REGISTRY_TEST_DOCKER=1 and a Docker engine that
//     answers a ping within a few seconds, a container that
//     testcontainers-go starts at first use and the whole binary shares:
//     PostgreSQL from [postgresImage], Apache Kafka in KRaft mode from
//     [kafkaImage]. [Main] terminates them when the binary ends, and
//     testcontainers' reaper (Ryuk) removes them if the binary dies first.
//  3. Otherwise the local path: PostgreSQL from a private cluster that the
//     test binary starts once (internal/pglaunch, the launcher `registry
//     dev` uses), Kafka from an in-process kfake broker per test. The
//     cluster's server binaries are found the way `registry dev` finds
//     them, from the same variables: REGISTRY_POSTGRES (auto, the default:
//     the machine's binaries, else the pinned build; system; download),
//     REGISTRY_POSTGRES_MIRROR and REGISTRY_POSTGRES_CACHE. So a machine
//     without PostgreSQL runs every PostgreSQL test on the downloaded
//     build rather than skipping them; a value of REGISTRY_POSTGRES that
//     does not parse fails the tests that need PostgreSQL.
//
// REGISTRY_TEST_DOCKER=1 without a reachable engine is not an error, under
// CI=true or not: the binary prints one line on stderr saying so and why,
// and takes the local path, which is real PostgreSQL and a real
// Kafka-protocol broker too. An engine that answers but cannot start a
// container (an image that cannot be pulled, say) is a missing dependency,
// as below.
//
// Every test gets its own database, created on whichever server was chosen
// and dropped when the test ends. A shared broker (TEST_KAFKA_BROKERS or
// the container) serves one test at a time, because the registry's topic
// names are fixed by the wire contract: Kafka holds a lock until the test
// ends, and deletes the claims and registrations topics first, waiting
// until the broker no longer lists them.
//
// Under CI=true a missing dependency fails the test; elsewhere it skips
// with the reason.
package testenv
