package pglaunch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

const (
	pollInterval = 20 * time.Millisecond
	probeTimeout = time.Second
	// logTailBytes bounds how much of the server log an error quotes.
	logTailBytes = 4 << 10
)

// waitReady polls until the server accepts connections, exits, or the
// timeout or ctx expire.
func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
	for {
		if probe(ctx, addr) {
			return nil
		}
		select {
		case <-c.done:
			return c.startupFailed()
		case <-ctx.Done():
			return fmt.Errorf("pglaunch: waiting for PostgreSQL to start: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("pglaunch: PostgreSQL did not accept connections on %s within %s; server log %s ends with:\n%s",
				addr, readyTimeout, c.logPath, c.logTail())
		case <-tick.C:
		}
	}
}

// startupFailed describes a server that exited before becoming ready.
func (c *Cluster) startupFailed() error {
	tail := c.logTail()
	err := fmt.Errorf("pglaunch: PostgreSQL exited during startup (%v); server log %s ends with:\n%s", c.exitErr, c.logPath, tail)
	if strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w (%w)", err, errPortInUse)
	}
	return err
}

// probe reports whether a server at addr completes the start of the
// protocol handshake. A TCP connect alone is not enough: while starting up
// or recovering, postgres accepts connections only to reject them.
//
// It sends a StartupMessage and treats any authentication request as
// ready, which is also what pg_isready does; an ErrorResponse ('E') means
// "the database system is starting up".
func probe(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write(startupMessage("postgres", "postgres")); err != nil {
		return false
	}
	var reply [1]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil || reply[0] != 'R' {
		return false
	}
	conn.Write([]byte{'X', 0, 0, 0, 4}) // Terminate, so the server logs no EOF warning
	return true
}

// startupMessage encodes a protocol 3.0 StartupMessage.
func startupMessage(user, database string) []byte {
	msg := make([]byte, 4, 64) // length, filled in last
	msg = binary.BigEndian.AppendUint32(msg, 3<<16)
	for _, s := range []string{"user", user, "database", database, ""} {
		msg = append(msg, s...)
		msg = append(msg, 0)
	}
	binary.BigEndian.PutUint32(msg, uint32(len(msg)))
	return msg
}

// logTail returns the end of what this run wrote to the server log, for
// error messages; it never fails, since it only decorates another error.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "(cannot read server log: " + err.Error() + ")"
	}
	defer f.Close()
	start := c.logOffset
	if fi, err := f.Stat(); err == nil && fi.Size()-start > logTailBytes {
		start = fi.Size() - logTailBytes
	}
	b, err := io.ReadAll(io.NewSectionReader(f, start, logTailBytes))
	if err != nil {
		return "(cannot read server log: " + err.Error() + ")"
	}
	if len(b) == 0 {
		return "(server log is empty)"
	}
	return strings.TrimSpace(string(b))
}
