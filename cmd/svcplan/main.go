// Command svcplan compiles Kubernetes services into kube-proxy's rules and
// prints, traces, compares or applies them.
//
//	svcplan plan  --mode iptables [-f FILE] [--node NAME]
//	svcplan trace -f FILE --node NAME --src IP --dst IP:PORT[/udp]
//	svcplan stats [-f FILE] [--node NAME]
//	svcplan diff  -f OLD -f NEW [--node NAME]
//
// Input is a YAML or JSON stream of Service, EndpointSlice and Node objects
// (as `kubectl get svc,endpointslices,nodes -A -o yaml` prints them),
// optionally with a KubeProxyConfiguration document. Without -f the embedded
// example cluster is used.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
)

const usage = `usage: svcplan <command> [flags]

commands:
  plan     print the rules of a proxy mode (a dry run: the tool's own input format)
  trace    show where one packet goes, from the plan
  stats    count chains and rules per table
  diff     show the chains two inputs would add, remove or change
  apply    make a kernel (or a network namespace) match the plan
  cleanup  remove everything svcplan owns from a kernel

Run 'svcplan <command> -h' for the flags of a command.
`

// exitError carries an exit code out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "svcplan:", err)
		os.Exit(1)
	}
}

// run executes one command line; it is main without the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{2}
	}
	env := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "plan":
		return env.plan(rest)
	case "trace":
		return env.trace(rest)
	case "stats":
		return env.stats(rest)
	case "diff":
		return env.diff(rest)
	case "apply":
		return env.apply(rest)
	case "cleanup":
		return env.cleanup(rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "svcplan: unknown command %q\n\n%s", cmd, usage)
	return exitError{2}
}

// env is what every command gets: its context and output streams.
type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
}
