//go:build failpoints

package main

import (
	"fmt"
	"os"

	"github.com/usernameregistry/registry/projector"
)

// failpointHook reads REGISTRY_FAILPOINTS (see projector.ParseFailpoints)
// for the projector of `registry project`. Only this build, made with
// -tags failpoints by the chaos harness, reads it.
func failpointHook() (func(string) error, error) {
	hook, err := projector.ParseFailpoints(os.Getenv("REGISTRY_FAILPOINTS"))
	if err != nil {
		return nil, fmt.Errorf("REGISTRY_FAILPOINTS: %w", err)
	}
	return hook, nil
}

// failpointHookOf reads REGISTRY_FAILPOINTS for a command with failpoints
// of its own (registry policy upgrade: upgrade.Failpoints).
func failpointHookOf(known []string) (func(string) error, error) {
	hook, err := projector.ParseFailpointsOf(os.Getenv("REGISTRY_FAILPOINTS"), known...)
	if err != nil {
		return nil, fmt.Errorf("REGISTRY_FAILPOINTS: %w", err)
	}
	return hook, nil
}
