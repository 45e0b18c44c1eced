// Package pprofsrv serves Go's runtime profiles (net/http/pprof) on an
// address of its own, for both binaries' --pprof flag. It is for finding
// where time goes (docs/benchmarks.md); keep it on a loopback address,
// since profiles show the process's internals.
package pprofsrv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
)

// Serve serves /debug/pprof/ on addr until ctx ends and prints the URL to
// stdout; an empty addr serves nothing. It returns once listening, or the
// error of listening on addr.
func Serve(ctx context.Context, addr string, stdout io.Writer) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for pprof: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck // ends with Close below
	context.AfterFunc(ctx, func() { srv.Close() })
	fmt.Fprintf(stdout, "pprof on http://%s/debug/pprof/\n", ln.Addr())
	return nil
}
