package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
)

// servePprof serves Go's profiles on --pprof until ctx ends. It is for
// finding where time goes (docs/benchmarks.md); keep it on a loopback
// address, since profiles show the process's internals.
func servePprof(ctx context.Context, c *config, stdout io.Writer) error {
	if c.pprofAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", c.pprofAddr)
	if err != nil {
		return fmt.Errorf("listening on %s for pprof: %w", c.pprofAddr, err)
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
