package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Environment variables this package reads or sets.
const (
	// RequireVMEnv names the variable that, set to 1, turns every skip of
	// [Run] for a missing qemu, missing assets or missing root into a test
	// failure, so that CI cannot pass by skipping the VM tier.
	RequireVMEnv = "SVCPLAN_REQUIRE_VM"
	// CacheEnv names the variable that overrides [DefaultCache], the
	// directory holding the assets hack/vm-assets.sh prepares.
	CacheEnv = "SVCPLAN_VM_CACHE"
	// GuestEnv names the variable the guest's test binary runs with, set to
	// 1; [Inside] reports it.
	GuestEnv = "SVCPLAN_VM_GUEST"
)

// DefaultCache is where hack/vm-assets.sh puts the kernel (vmlinuz) and the
// base initramfs (initramfs.cpio) unless CacheEnv says otherwise.
const DefaultCache = "/var/cache/svcplan-vm"

// Defaults for the zero fields of [Config].
const (
	DefaultRun     = "^TestGuest"
	DefaultTimeout = 5 * time.Minute
	DefaultMemory  = 1024
	DefaultCPUs    = 2
)

// bootAllowance is how much longer than the guest's test timeout the host
// waits for qemu: boot, module loading and power-off.
const bootAllowance = 90 * time.Second

// Config says which tests [Run] runs in the VM and how the VM is sized.
type Config struct {
	// Package is the package whose test binary runs in the guest, as
	// `go test -c` takes it, relative to the calling test's working
	// directory (its package directory). The zero value means ".", the
	// calling package. Its testdata directory, if any, is copied into the
	// guest, which runs the binary in a directory holding it.
	Package string
	// Run is the -test.run pattern the guest binary gets. The zero value
	// means DefaultRun, "^TestGuest".
	Run string
	// Args are more test flags for the guest binary, such as
	// "-test.bench=." or "-test.count=3". The zero value adds none.
	Args []string
	// Env are more KEY=VALUE variables for the guest binary. Every SVCPLAN_*
	// variable of the host (but CacheEnv) is passed on in any case, as is
	// GuestEnv=1. The zero value adds none.
	Env []string
	// Timeout bounds the guest's tests (-test.timeout); the host waits
	// boot time on top. The zero value means DefaultTimeout, and any value
	// is shortened to fit the calling test's deadline.
	Timeout time.Duration
	// Memory is the guest's memory in MiB. The zero value means
	// DefaultMemory (1 GiB).
	Memory int
	// CPUs is the number of guest CPUs. The zero value means DefaultCPUs.
	CPUs int
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Package == "" {
		c.Package = "."
	}
	if c.Run == "" {
		c.Run = DefaultRun
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Memory <= 0 {
		c.Memory = DefaultMemory
	}
	if c.CPUs <= 0 {
		c.CPUs = DefaultCPUs
	}
	return c
}

// Inside reports whether the calling program is a test binary that [Run]
// started inside the VM.
func Inside() bool { return os.Getenv(GuestEnv) == "1" }

// RequireGuest skips t unless it runs inside the VM, naming hostTest, the
// host test that runs it there. The skip never fails, whatever
// SVCPLAN_REQUIRE_KERNEL or SVCPLAN_REQUIRE_VM say: on the host, hostTest
// runs the guest test and fails if it fails.
func RequireGuest(t testing.TB, hostTest string) {
	t.Helper()
	if !Inside() {
		t.Skipf("runs inside the qemu VM via %s", hostTest)
	}
}

// Assets are the files [Run] boots: the kernel and the base initramfs.
type Assets struct {
	// Kernel is the path of the kernel image (vmlinuz).
	Kernel string
	// Initramfs is the path of the base initramfs, an uncompressed cpio
	// archive with busybox, the tools, the modules and /init.
	Initramfs string
}

// FindAssets returns the assets in CacheEnv's directory, or DefaultCache,
// and an error naming what is missing.
func FindAssets() (Assets, error) {
	dir := os.Getenv(CacheEnv)
	if dir == "" {
		dir = DefaultCache
	}
	a := Assets{Kernel: filepath.Join(dir, "vmlinuz"), Initramfs: filepath.Join(dir, "initramfs.cpio")}
	for _, p := range []string{a.Kernel, a.Initramfs} {
		if _, err := os.Stat(p); err != nil {
			return a, fmt.Errorf("no VM assets (run hack/vm-assets.sh as root): %w", err)
		}
	}
	return a, nil
}

// qemuBinary is the emulator Run starts.
const qemuBinary = "qemu-system-x86_64"

// available returns why the VM cannot run here, or "" when it can.
func available() (string, Assets) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return "the VM tier needs linux/amd64, not " + runtime.GOOS + "/" + runtime.GOARCH, Assets{}
	}
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("the VM tier needs root, running as uid %d", uid), Assets{}
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		return qemuBinary + " is not on PATH (apt-get install qemu-system-x86)", Assets{}
	}
	a, err := FindAssets()
	if err != nil {
		return err.Error(), Assets{}
	}
	return "", a
}

// skipOrFail skips t with reason, or fails it when RequireVMEnv is 1.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequireVMEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, RequireVMEnv)
	}
	t.Skip(reason)
}

// guestEnv returns the variables the guest binary runs with.
func guestEnv(cfg Config) []string {
	env := []string{GuestEnv + "=1"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SVCPLAN_") && k != CacheEnv && k != GuestEnv {
			env = append(env, kv)
		}
	}
	return append(env, cfg.Env...)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// runScript returns /svcplan/run.sh, which /init runs: it sets the
// environment and runs the test binary from the package's directory.
func runScript(cfg Config, timeout time.Duration) string {
	var b strings.Builder
	b.WriteString("cd /svcplan/pkg || exit 126\n")
	for _, kv := range guestEnv(cfg) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	args := []string{"/svcplan/pkg.test", "-test.v", "-test.run=" + cfg.Run,
		"-test.timeout=" + timeout.String()}
	args = append(args, cfg.Args...)
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	b.WriteString(strings.Join(args, " ") + "\n")
	return b.String()
}
