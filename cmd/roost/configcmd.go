package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/roost-mqtt/roost/internal/config"
)

const configHelp = `Configuration tools.

  roost config convert mosquitto.conf > roost.yaml

convert reads a mosquitto configuration as roost serve --config would and
writes the equivalent roost.yaml, with a comment where an option changed
meaning and one per option mosquitto.conf had that Roost ignores. An
option Roost cannot honour is an error naming the file and the line
(exit status 1).`

func runConfig(_ context.Context, args []string, std stdio) int {
	fs := newFlagSet("config", " convert FILE", configHelp, std.err)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) != 2 || rest[0] != "convert" {
		fmt.Fprintln(std.err, "Usage: roost config convert FILE")
		return 2
	}
	data, err := os.ReadFile(rest[1])
	if err != nil {
		fmt.Fprintf(std.err, "roost config: %v\n", err)
		return 1
	}
	if !config.IsMosquitto(data) {
		fmt.Fprintf(std.err, "roost config: %s is not a mosquitto configuration\n", rest[1])
		return 1
	}
	cfg, err := config.ParseMosquitto(rest[1], data)
	if err == nil {
		err = cfg.WriteYAML(std.out, rest[1])
	}
	if err != nil {
		fmt.Fprintf(std.err, "roost config: %v\n", err)
		return 1
	}
	return 0
}
