// Command roost is the Roost MQTT broker and its tools, one subcommand each:
//
//	roost serve [flags]   run the broker
//	roost version         print version information
//
// Each subcommand lives in its own file as a function with the signature of
// command.run, so tests run it in-process with their own context and writers.
// Adding one is a new file and a line in commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/roost-mqtt/roost/broker"
)

// command is one subcommand. run returns the process exit code: 0 success,
// 1 failure, 2 bad usage. ctx ends on SIGINT or SIGTERM.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, std stdio) int
}

// stdio is a command's standard streams: the process's in main, buffers in
// tests.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// commands is in the order `roost help` lists them.
var commands = []command{
	{"serve", "run the broker", runServe},
	{"pub", "publish a message (flags of mosquitto_pub)", runPub},
	{"sub", "subscribe and print messages (flags of mosquitto_sub)", runSub},
	{"bridge", "forward topics between two brokers until interrupted", runBridge},
	{"config", "convert a mosquitto.conf to roost.yaml (config convert)", runConfig},
	{"cert", "make a local CA and certificate for trying TLS (cert dev)", runCert},
	{"passwd", "add, change or delete a user in a password file", runPasswd},
	{"bench", "load-test a broker: fan-in, fan-out, pairs, latency, connections, overload", runBench},
	{"cluster", "show a cluster node's view of the cluster (cluster status)", runCluster},
	{"version", "print version information", runVersion},
}

func main() {
	bi, _ := debug.ReadBuildInfo()
	broker.Version = resolveVersion(version, bi) // for $SYS/broker/version
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal gets the default action: exit now
	}()
	os.Exit(run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
}

// run dispatches args[0] to its command.
func run(ctx context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			usage(stdout)
			return 0
		}
		name, rest = rest[0], []string{"-h"}
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest, std)
		}
	}
	fmt.Fprintf(stderr, "roost: unknown command %q\n\n", name)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Roost is an MQTT broker.\n\nUsage:\n\n\troost <command> [flags]\n\nCommands:\n\n")
	for _, c := range commands {
		fmt.Fprintf(w, "\t%-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'roost help <command>' for a command's flags.\n")
}

// newFlagSet returns a flag set for `roost NAME ARGS` whose -h output shows
// the synopsis and a description, written to stderr.
func newFlagSet(name, argsSynopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: roost %s [flags]%s\n\n%s\n", name, argsSynopsis, description)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args for a command that takes no positional arguments.
// When it returns ok false the command should exit with code: 0 after -h,
// 2 after a usage error (already reported).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0, false
	} else if err != nil {
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "roost %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}
