// Command cni shows the CNI-embedding case: a CNI plugin that programs
// service rules inside a pod's network namespace, rather than the node's.
// Given the namespace's path (--netns, or $CNI_NETNS as a CNI runtime sets
// it) and the cluster's objects, it compiles the services one node sees
// and makes that namespace hold exactly their rules, in iptables or
// nftables mode; --cleanup removes them again, as a plugin's DEL would.
//
//	cni --netns /run/netns/pod1 -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16
//	cni --netns /run/netns/pod1 --cleanup
//
// It never works in its own network namespace: a path that names the
// namespace the program runs in is refused before anything is written.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/svcplan/svcplan/examples"
	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/translate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "cni:", err)
		os.Exit(1)
	}
}

// errUsage marks a command line that run refused; the flag package has
// printed why.
var errUsage = errors.New("usage")

// options are the parsed command line.
type options struct {
	netns        string
	file         string
	node         string
	clusterCIDRs []netip.Prefix
	mode         translate.Mode
	cleanup      bool
}

// parseArgs parses args; errors have been printed to stderr.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cni", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.netns, "netns", os.Getenv("CNI_NETNS"), "`path` of the network namespace to program, such as /run/netns/pod1 (default $CNI_NETNS)")
	fs.StringVar(&o.file, "f", "", "`file` of Kubernetes objects (YAML or JSON, as kubectl prints them); default: the embedded example cluster")
	fs.StringVar(&o.node, "node", "", "node `name` whose view of the services to apply; default: node-a for the example cluster")
	cidrs := fs.String("cluster-cidr", "", "pod `CIDRs`, comma-separated; traffic from outside them to cluster IPs is masqueraded")
	mode := fs.String("mode", string(translate.ModeIPTables), "proxy `mode`: iptables or nftables")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove the rules instead of applying them")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	fail := func(format string, args ...any) (options, error) {
		fmt.Fprintf(stderr, "cni: "+format+"\n", args...)
		fs.Usage()
		return o, errUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.netns == "" {
		return fail("--netns (or $CNI_NETNS) is required: cni never programs its own namespace")
	}
	o.mode = translate.Mode(*mode)
	if o.mode != translate.ModeIPTables && o.mode != translate.ModeNFTables {
		return fail("--mode %q: want iptables or nftables", *mode)
	}
	for _, s := range strings.Split(*cidrs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fail("--cluster-cidr: %v", err)
		}
		o.clusterCIDRs = append(o.clusterCIDRs, p.Masked())
	}
	return o, nil
}

// run is the whole program: parse args, then apply or clean up.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	if err := checkForeignNetNS(o.netns); err != nil {
		return err
	}
	if o.cleanup {
		if err := cleanup(ctx, o.mode, o.netns); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed the %s rules from %s\n", o.mode, o.netns)
		return nil
	}
	plan, services, err := compile(o, stderr)
	if err != nil {
		return err
	}
	if err := apply(ctx, plan, o.netns); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %d services in %s mode to %s\n", services, o.mode, o.netns)
	return nil
}

// compile reads the objects and compiles the node's services; it returns
// the plan and the number of services in it. Conversion warnings go to
// stderr.
func compile(o options, stderr io.Writer) (*translate.Plan, int, error) {
	data, node := examples.Cluster(), o.node
	if o.file != "" {
		var err error
		if data, err = os.ReadFile(o.file); err != nil {
			return nil, 0, err
		}
	} else if node == "" {
		node = "node-a"
	}
	objs, warns, err := kube.Read(bytes.NewReader(data))
	if err != nil {
		return nil, 0, err
	}
	var stateOpts []kube.Option
	if len(o.clusterCIDRs) > 0 {
		stateOpts = append(stateOpts, kube.WithClusterCIDRs(o.clusterCIDRs...))
	}
	st, more, err := kube.StateFor(objs, node, stateOpts...)
	if err != nil {
		return nil, 0, err
	}
	for _, w := range append(warns, more...) {
		fmt.Fprintln(stderr, "cni: warning:", w)
	}
	plan, err := translate.Compile(&st, o.mode)
	if err != nil {
		return nil, 0, err
	}
	return plan, len(st.Services), nil
}
