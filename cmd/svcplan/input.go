package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/svcplan/svcplan/examples"
	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// inputFlags are the flags that say where the state comes from and how the
// node's proxy is configured, named as kube-proxy names them.
type inputFlags struct {
	files             fileList
	node              string
	clusterCIDR       string
	masqueradeAll     boolFlag
	masqueradeBit     intFlag
	nodePortAddresses string
	mode              string
}

// boolFlag and intFlag remember whether they were set, so that a flag
// overrides the configuration document only when given.
type boolFlag struct{ set, v bool }

func (b *boolFlag) String() string     { return fmt.Sprint(b.v) }
func (b *boolFlag) IsBoolFlag() bool   { return true }
func (b *boolFlag) Set(s string) error { b.set = true; _, err := fmt.Sscan(s, &b.v); return err }

type intFlag struct {
	set bool
	v   int
}

func (i *intFlag) String() string { return fmt.Sprint(i.v) }
func (i *intFlag) Set(s string) error {
	i.set = true
	if _, err := fmt.Sscan(s, &i.v); err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	return nil
}

func (in *inputFlags) register(fs *flag.FlagSet, withMode bool) {
	fs.Var(&in.files, "f", "input `file` of Kubernetes objects (YAML or JSON; - for stdin); default: the embedded example cluster")
	fs.StringVar(&in.node, "node", "", "node `name` to compile for")
	fs.StringVar(&in.node, "hostname-override", "", "same as --node, as kube-proxy names it")
	fs.StringVar(&in.clusterCIDR, "cluster-cidr", "", "pod `CIDRs`, comma-separated; traffic from outside them to cluster IPs is masqueraded")
	fs.Var(&in.masqueradeAll, "masquerade-all", "masquerade all traffic sent to cluster IPs")
	fs.Var(&in.masqueradeBit, "iptables-masquerade-bit", "`bit` of the packet mark used for masquerade (0-31, default 14)")
	fs.StringVar(&in.nodePortAddresses, "nodeport-addresses", "", "`CIDRs` of node addresses that serve NodePorts, comma-separated")
	if withMode {
		fs.StringVar(&in.mode, "mode", "iptables", "proxy `mode`: iptables, ipvs, nftables or userspace")
	}
}

// newFlagSet returns a flag set whose errors are returned, not fatal.
func (e *env) newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: svcplan %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and refuses stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return exitError{2}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "svcplan %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitError{2}
	}
	return nil
}

// load reads one input (a file, stdin or the embedded example) into the
// state of the chosen node.
func (e *env) load(in *inputFlags, file string) (*proxy.State, error) {
	var data []byte
	var err error
	name := file
	switch file {
	case "":
		name = "the embedded example cluster (examples/cluster.yaml)"
		fmt.Fprintf(e.stderr, "svcplan: no -f given; using %s\n", name)
		data = examples.Cluster()
	case "-":
		name = "standard input"
		data, err = io.ReadAll(os.Stdin)
	default:
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	objs, warns, err := kube.Read(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	e.warn(name, warns)
	node := in.node
	if node == "" && file == "" {
		node = "node-a"
	}
	if node == "" && (objs.ProxyConfig == nil || objs.ProxyConfig.NodeName() == "") {
		switch len(objs.Nodes) {
		case 1:
			node = objs.Nodes[0].Name
		default:
			return nil, fmt.Errorf("%s holds %d Node objects: say which with --node", name, len(objs.Nodes))
		}
	}
	opts, err := in.options()
	if err != nil {
		return nil, err
	}
	st, warns, err := kube.StateFor(objs, node, opts...)
	if err != nil {
		return nil, fmt.Errorf("converting %s: %w", name, err)
	}
	e.warn(name, warns)
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("invalid state in %s:\n%w", name, err)
	}
	return &st, nil
}

func (e *env) warn(name string, warns []kube.Warning) {
	for _, w := range warns {
		fmt.Fprintf(e.stderr, "svcplan: warning: %s: %s\n", name, w)
	}
}

// options turns the kube-proxy flags that were given into kube options.
func (in *inputFlags) options() ([]kube.Option, error) {
	var opts []kube.Option
	if in.clusterCIDR != "" {
		ps, err := parsePrefixes("--cluster-cidr", in.clusterCIDR)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kube.WithClusterCIDRs(ps...))
	}
	if in.masqueradeAll.set {
		opts = append(opts, kube.WithMasqueradeAll(in.masqueradeAll.v))
	}
	if in.masqueradeBit.set {
		opts = append(opts, kube.WithMasqueradeBit(in.masqueradeBit.v))
	}
	if in.nodePortAddresses != "" {
		ps, err := parsePrefixes("--nodeport-addresses", in.nodePortAddresses)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kube.WithNodePortAddresses(ps...))
	}
	return opts, nil
}

func parsePrefixes(flagName, v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// compile compiles st in the chosen mode.
func compile(st *proxy.State, mode string) (*translate.Plan, error) {
	switch translate.Mode(mode) {
	case translate.ModeIPTables, translate.ModeIPVS, translate.ModeNFTables, translate.ModeUserspace:
	default:
		return nil, fmt.Errorf("--mode %q: unknown; want iptables, ipvs, nftables or userspace", mode)
	}
	return translate.Compile(st, translate.Mode(mode))
}
