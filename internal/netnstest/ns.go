package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NamePrefix starts the name of every namespace this package creates, so
// that namespaces left behind by a crashed test are easy to recognise and
// remove (ip netns list | grep ^svp-).
const NamePrefix = "svp-"

// ipTimeout bounds one run of the ip tool while building a topology.
const ipTimeout = 30 * time.Second

// NS is one network namespace made for a test. It is created with
// `ip netns add`, so it shows in `ip netns list` and `ip netns exec` works,
// and it is deleted in the test's Cleanup. Its methods are safe for
// concurrent use, except that the ones taking a testing.TB must be called
// from that test's goroutine.
type NS struct {
	name   string
	link   string // the main link, to which AddAddr adds; "lo" for a lone namespace
	handle netns.NsHandle
}

// NewNS creates a lone namespace with only its loopback link, up, and
// deletes it in t's Cleanup. It suits tests that apply rules and read them
// back without sending traffic. Like [New] it skips t, or fails it when
// SVCPLAN_REQUIRE_KERNEL=1, if the machine cannot make namespaces.
func NewNS(t testing.TB) *NS {
	t.Helper()
	Require(t, "ip")
	id, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := createNS(NamePrefix + id + "-ns")
	if err != nil {
		skipOrFail(t, err.Error())
	}
	t.Cleanup(func() {
		if err := ns.remove(); err != nil {
			t.Error(err)
		}
	})
	ns.link = "lo"
	return ns
}

// Name returns the namespace's name, as `ip netns list` shows it.
func (ns *NS) Name() string { return ns.name }

// String returns the namespace's name.
func (ns *NS) String() string { return ns.name }

// Do runs fn with the network namespace switched to ns and returns fn's
// error. fn runs on a goroutine of its own, locked to an OS thread that has
// joined ns; goroutines that fn starts do not inherit the namespace, and fn
// must not call t.FailNow (t.Fatal). Sockets made inside fn stay in ns after
// Do returns, so a listener created there can be served from any goroutine,
// and commands started with os/exec inside fn run in ns.
func (ns *NS) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("read current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.handle); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", ns.name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and in ns; the runtime ends it when
			// this goroutine exits, so no other goroutine runs there.
			done <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns.name, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// Command returns a command that runs name with args inside ns, as
// `ip netns exec NAME name args...` (no shell), for callers that want to set
// its standard input or read its output as it comes.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"netns", "exec", ns.name, name}, args...)
	return exec.CommandContext(ctx, "ip", argv...)
}

// Exec runs name with args inside ns and returns its standard output. A
// failure's error carries the command's standard error.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := ns.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("run %s in netns %s: %w%s", name, ns.name, err, stderrSuffix(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Route adds, or replaces, the route to dst via the gateway via in ns. It
// fails t if the kernel refuses.
func (ns *NS) Route(t testing.TB, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	if err := ns.ip("route", "replace", dst.Masked().String(), "via", via.String()); err != nil {
		t.Fatal(err)
	}
}

// AddAddr adds the address p to the namespace's main link (eth0; lo for a
// namespace from [NewNS]), without duplicate address detection for IPv6, so
// the address is usable at once. It fails t if the kernel refuses.
func (ns *NS) AddAddr(t testing.TB, p netip.Prefix) {
	t.Helper()
	if err := ns.ip(addrAdd(p, ns.link)...); err != nil {
		t.Fatal(err)
	}
}

// addrAdd returns the ip arguments that add p to dev, with nodad for IPv6.
func addrAdd(p netip.Prefix, dev string) []string {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// createNS adds the named namespace, opens a handle on it and brings its
// loopback link up. On failure nothing is left behind.
func createNS(name string) (*NS, error) {
	if err := runIP(nil, "netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NS{name: name, link: "eth0", handle: netns.None()}
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open netns %s: %w", name, err), ns.remove())
	}
	ns.handle = h
	if err := ns.ip("link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, ns.remove())
	}
	return ns, nil
}

// remove closes the handle on ns and deletes it; its links go with it.
func (ns *NS) remove() error {
	var errs []error
	if ns.handle.IsOpen() {
		if err := ns.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns %s: %w", ns.name, err))
		}
	}
	if err := runIP(nil, "netns", "del", ns.name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ip runs one ip command inside ns (ip -n NAME args...).
func (ns *NS) ip(args ...string) error {
	return runIP(nil, append([]string{"-n", ns.name}, args...)...)
}

// batch runs several ip commands inside ns with one ip process; each
// command is a list of arguments.
func (ns *NS) batch(cmds ...[]string) error {
	var in bytes.Buffer
	for _, c := range cmds {
		in.WriteString(strings.Join(c, " "))
		in.WriteByte('\n')
	}
	return runIP(in.Bytes(), "-n", ns.name, "-batch", "-")
}

// runIP runs the ip tool with args, feeding it stdin when not nil.
func runIP(stdin []byte, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		what := strings.Join(args, " ")
		if stdin != nil {
			what += " <<" + strings.ReplaceAll(strings.TrimSpace(string(stdin)), "\n", "; ")
		}
		return fmt.Errorf("ip %s: %w%s", what, err, stderrSuffix(stderr.Bytes()))
	}
	return nil
}

// stderrSuffix formats a tool's standard error for the end of an error
// message.
func stderrSuffix(stderr []byte) string {
	s := strings.TrimSpace(string(stderr))
	if s == "" {
		return ""
	}
	return ": " + strings.ReplaceAll(s, "\n", "; ")
}

// randomID returns 8 random hex digits, which make namespace names unique
// across test processes running at once.
func randomID() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make namespace name: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
