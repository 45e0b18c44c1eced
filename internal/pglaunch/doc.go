// Package pglaunch starts a private PostgreSQL cluster from the machine's
// PostgreSQL server binaries, or from a pinned PostgreSQL build that it
// downloads, verifies and caches when the machine has none.
//
// [Binaries] picks the binaries: the machine's ([FindBinDir]: PATH, then the
// distributions' versioned directories), or Zonky's build of PostgreSQL
// [PinnedVersion] for this OS and architecture, fetched once from Maven
// Central or a mirror, checked against the SHA-256 kept in this package
// before it is unpacked, and unpacked into a per-user cache that later
// starts use without the network.
//
// It exists so that `registry dev` and test helpers can get a real database
// without Docker or a system-wide service: [Start] runs initdb on a fresh data
// directory (or reuses one that already holds a cluster), runs `postgres`
// directly as a child process listening only on 127.0.0.1, and waits until
// the server accepts connections. [Cluster.Stop] shuts it down cleanly.
//
// The server is a child of the calling process and is tied to its lifetime:
// it gets SIGINT (fast shutdown) if the caller dies (Linux only), and it runs
// in its own process group so that a terminal Ctrl-C reaches the caller
// first, letting it stop its own work before the database goes away.
//
// PostgreSQL refuses to run as root. When the caller is root, initdb and
// postgres run as the unprivileged "postgres" account, which must therefore
// be able to traverse every parent directory of [Config.Dir].
//
// The package is Unix-only.
package pglaunch
