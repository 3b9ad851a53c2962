// Command controller is a minimal kube-proxy replacement built from
// svcplan's packages: a node agent that watches the cluster's Services,
// EndpointSlices and its own Node (kube.Watcher) and keeps the node's
// rules in step with them (proxier.Proxier), in iptables, nftables or
// userspace mode, until SIGINT or SIGTERM.
//
//	controller --kubeconfig ~/.kube/config --node node-a --mode nftables --cluster-cidr 10.244.0.0/16
//
// Without --kubeconfig (and $KUBECONFIG) it uses the in-cluster config,
// as a DaemonSet pod does. It serves Prometheus metrics on
// --metrics-address and the proxier's /healthz and /livez on
// --healthz-address, as kube-proxy does on the same default ports.
// --netns programs another network namespace instead of the
// controller's own; --cleanup removes every mode's rules and exits, like
// kube-proxy --cleanup. On exit the rules stay, as kube-proxy leaves them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplan/svcplan/kube"
	"github.com/svcplan/svcplan/proxier"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], env{stderr: os.Stderr, newClient: newClient})
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// errUsage marks a command line that run refused; the flag package has
// printed why.
var errUsage = errors.New("usage")

// env is what run takes from the world, so that a test can run the whole
// program against a fake clientset and fake appliers.
type env struct {
	// stderr receives the usage text and the log.
	stderr io.Writer
	// newClient makes the API client from the --kubeconfig path (empty
	// for the in-cluster config).
	newClient func(kubeconfig string) (kubernetes.Interface, error)
	// proxierOpts come after run's own options for proxier.New.
	proxierOpts []proxier.Option
	// listening, when not nil, is told the address each server listens
	// on ("metrics", "healthz").
	listening func(server string, addr net.Addr)
}

// newClient makes a clientset from a kubeconfig file, or from the
// in-cluster config when kubeconfig is empty.
func newClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("loading the client config: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// options are the parsed command line.
type options struct {
	kubeconfig     string
	mode           translate.Mode
	node           string
	netns          string
	metricsAddress string
	healthzAddress string
	clusterCIDRs   []netip.Prefix
	minSync        time.Duration
	syncPeriod     time.Duration
	cleanup        bool
	verbose        bool
}

// parseArgs parses args; errors have been printed to stderr.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig `path`; empty: the in-cluster config")
	mode := fs.String("mode", string(translate.ModeIPTables), "proxy `mode`: iptables, nftables or userspace")
	fs.StringVar(&o.node, "node", strings.ToLower(host), "this node's `name`, as its Node object has it")
	fs.StringVar(&o.node, "hostname-override", strings.ToLower(host), "same as --node, as kube-proxy names it")
	fs.StringVar(&o.netns, "netns", "", "`path` of a network namespace to program instead of the controller's own")
	fs.StringVar(&o.metricsAddress, "metrics-address", "127.0.0.1:10249", "`address` of the Prometheus metrics server; empty: none")
	fs.StringVar(&o.healthzAddress, "healthz-address", "0.0.0.0:10256", "`address` of the /healthz and /livez server; empty: none")
	cidrs := fs.String("cluster-cidr", "", "pod `CIDRs`, comma-separated; traffic from outside them to cluster IPs is masqueraded")
	fs.DurationVar(&o.minSync, "min-sync-period", proxier.DefaultMinSyncInterval, "minimum `interval` between syncs")
	fs.DurationVar(&o.syncPeriod, "sync-period", proxier.DefaultSyncPeriod, "`interval` of the periodic resync")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove every mode's rules and exit")
	fs.BoolVar(&o.verbose, "v", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	fail := func(format string, args ...any) (options, error) {
		fmt.Fprintf(stderr, "controller: "+format+"\n", args...)
		fs.Usage()
		return o, errUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.node == "" {
		return fail("--node is required (the host name is unknown)")
	}
	o.mode = translate.Mode(*mode)
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

// run is the whole program. It returns nil when ctx is cancelled.
func run(ctx context.Context, args []string, e env) error {
	o, err := parseArgs(args, e.stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	popts := []proxier.Option{
		proxier.WithLogger(log.With("component", "proxier")),
		proxier.WithRegistry(reg),
		proxier.WithMinSyncInterval(o.minSync),
		proxier.WithSyncPeriod(o.syncPeriod),
	}
	if o.netns != "" {
		popts = append(popts, proxier.WithNetNS(o.netns))
	}
	p, err := proxier.New(o.mode, append(popts, e.proxierOpts...)...)
	if err != nil {
		return err
	}
	if o.cleanup {
		return p.Cleanup(ctx)
	}
	client, err := e.newClient(o.kubeconfig)
	if err != nil {
		return err
	}
	var stateOpts []kube.Option
	if len(o.clusterCIDRs) > 0 {
		stateOpts = append(stateOpts, kube.WithClusterCIDRs(o.clusterCIDRs...))
	}
	w, err := kube.NewWatcher(client, o.node, queue{p}, kube.WithLogger(log.With("component", "watcher")), kube.WithStateOptions(stateOpts...))
	if err != nil {
		return err
	}
	log.Info("starting", "node", o.node, "mode", o.mode, "netns", o.netns)
	return serve(ctx, o, e, log, []task{
		{"proxier", p.Run},
		{"watcher", w.Run},
	}, map[string]http.Handler{
		"metrics": metricsHandler(reg),
		"healthz": p.Healthz(),
	}, func(ctx context.Context) error { return p.Close(ctx) })
}

// queue is the Watcher's Syncer: it hands each State to the proxier's
// Run loop, which syncs with kube-proxy's timing.
type queue struct{ p *proxier.Proxier }

// Sync implements kube.Syncer.
func (q queue) Sync(_ context.Context, st *proxy.State) error {
	q.p.Update(st)
	return nil
}

// metricsHandler serves reg on /metrics.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// task is a loop that runs until its context is done.
type task struct {
	name string
	run  func(context.Context) error
}

// serve runs the tasks and, on the addresses the options give, the HTTP
// servers, until ctx is done or one of them fails; then it stops them
// all, calls closeFn and returns the first failure.
func serve(ctx context.Context, o options, e env, log *slog.Logger, tasks []task, handlers map[string]http.Handler, closeFn func(context.Context) error) error {
	listeners, err := listen(map[string]string{"metrics": o.metricsAddress, "healthz": o.healthzAddress})
	if err != nil {
		return errors.Join(err, closeFn(ctx))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(tasks)+len(listeners))
	for _, t := range tasks {
		go func() {
			if err := t.run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", t.name, err)
				return
			}
			errs <- nil
		}()
	}
	var servers []*http.Server
	for name, l := range listeners {
		log.Info("serving", "server", name, "address", l.Addr().String())
		if e.listening != nil {
			e.listening(name, l.Addr())
		}
		srv := &http.Server{Handler: handlers[name], ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("%s server: %w", name, err)
				return
			}
			errs <- nil
		}()
	}
	// Run until ctx is done or a part stops; then stop the rest.
	var first error
	running := len(tasks) + len(servers)
	select {
	case <-ctx.Done():
	case first = <-errs:
		running--
	}
	cancel()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdown); err != nil && first == nil {
			first = err
		}
	}
	for ; running > 0; running-- {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if err := closeFn(shutdown); err != nil && first == nil {
		first = err
	}
	return first
}

// listen opens a TCP listener on each non-empty address, by name; on a
// failure it closes those it opened.
func listen(addrs map[string]string) (map[string]net.Listener, error) {
	out := map[string]net.Listener{}
	for name, addr := range addrs {
		if addr == "" {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("%s server: %w", name, err)
		}
		out[name] = l
	}
	return out, nil
}
