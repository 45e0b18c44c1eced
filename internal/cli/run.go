package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Command is one subcommand: it parses args, logs to log, and prints its
// results to stdout. It returns ErrUsage after printing its help.
type Command func(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error

// Main runs the subcommand os.Args names until it returns or SIGINT or
// SIGTERM cancels its context, and exits with status 1 after printing
// "name: error" on an error.
func Main(name, usage string, commands map[string]Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, usage, commands, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		stop()
		os.Exit(1)
	}
}

// Run dispatches args to its subcommand. No command (or -h, --help,
// help) prints usage to stdout; an unknown one prints it to stderr and is
// an error. A command's help and a stop by ctx while it starts or stops
// are not errors.
func Run(ctx context.Context, usage string, commands map[string]Command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	log, err := NewLogger(stderr)
	if err != nil {
		return err
	}
	err = cmd(ctx, args[1:], stdout, log)
	switch {
	case errors.Is(err, ErrUsage):
		return nil // the flag package already printed the help
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return nil // interrupted while starting or stopping: a clean stop
	}
	return err
}

// NewLogger returns a text logger on w at REGISTRY_LOG_LEVEL (debug, info,
// warn or error; default info), the one variable read before any command
// parses its flags.
func NewLogger(w io.Writer) (*slog.Logger, error) {
	var e Env
	var level slog.Level
	if err := level.UnmarshalText([]byte(e.Or("REGISTRY_LOG_LEVEL", "info"))); err != nil {
		return nil, fmt.Errorf("REGISTRY_LOG_LEVEL: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}
