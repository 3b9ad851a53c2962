package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Markers /init prints on the serial console.
const (
	exitMarker   = "SVCPLAN-VM-EXIT "
	bootedMarker = "svcplan-vm: booted "
)

// Run builds the test binary of cfg.Package (CGO off, so static), boots it
// in qemu under the Debian cloud kernel that hack/vm-assets.sh prepared,
// runs the guest tests cfg.Run selects as root, streams the guest's
// console into t.Log, and fails t if they fail, if the guest ends without
// reporting, or if the time runs out. It skips t, or fails it when
// SVCPLAN_REQUIRE_VM=1, when this is not linux/amd64, not root, or qemu or
// the assets are missing. Called inside the VM, it skips.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	if Inside() {
		t.Skip("already inside the VM")
	}
	reason, assets := available()
	if reason != "" {
		skipOrFail(t, reason)
		return
	}
	cfg = cfg.withDefaults()
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || !isShellName(k) {
			t.Fatalf("vmtest: Config.Env entry %q is not KEY=VALUE with a shell variable name", kv)
		}
	}
	start := time.Now()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pkg.test")
	buildCtx, cancelBuild := context.WithTimeout(context.Background(), cfg.Timeout+bootAllowance)
	defer cancelBuild()
	if err := buildTest(buildCtx, cfg.Package, bin); err != nil {
		t.Fatal(err)
	}
	built := time.Now()
	unlock, err := lockVM(t)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	locked := time.Now()
	hostTimeout, guestTimeout := timeouts(t, cfg.Timeout)
	ctx, cancel := context.WithTimeout(context.Background(), hostTimeout)
	defer cancel()
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeInitramfs(initrd, assets.Initramfs, bin, cfg, guestTimeout); err != nil {
		t.Fatal(err)
	}
	res, err := boot(ctx, t, assets.Kernel, initrd, cfg)
	t.Logf("vmtest: build %v, waited for another VM %v, boot %v, total %v", built.Sub(start).Round(time.Millisecond),
		locked.Sub(built).Round(time.Millisecond), res.boot.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	switch {
	case ctx.Err() != nil:
		t.Fatalf("vmtest: the VM did not finish within %v", hostTimeout)
	case !res.reported:
		t.Fatalf("vmtest: the VM ended without reporting an exit code (kernel panic or crash?): %v", err)
	case res.code != 0:
		t.Errorf("vmtest: guest tests %s of %s failed (exit code %d)", cfg.Run, cfg.Package, res.code)
	}
}

// isShellName reports whether s is a valid shell variable name.
func isShellName(s string) bool {
	for i, r := range s {
		letter := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return s != ""
}

// timeouts returns how long the host waits for qemu and the guest's
// -test.timeout, shortened to fit t's deadline.
func timeouts(t *testing.T, guest time.Duration) (host, g time.Duration) {
	host = guest + bootAllowance
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 5*time.Second; left < host {
			host = max(left, time.Second)
			g = max(host-bootAllowance/2, time.Second)
			return host, g
		}
	}
	return host, guest
}

// goTool returns the go command: the one on PATH, else the one of the
// toolchain that built this binary.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildTest compiles the test binary of pkg to out, statically.
func buildTest(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, goTool(), "test", "-c", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build the guest test binary of %s: %w\n%s", pkg, err, stderr.Bytes())
	}
	if _, err := os.Stat(out); err != nil {
		return fmt.Errorf("build the guest test binary of %s: package has no test files: %w", pkg, err)
	}
	return nil
}

// writeInitramfs writes to path the base initramfs followed by a second
// archive holding /svcplan/pkg.test, /svcplan/run.sh and the package's
// testdata in /svcplan/pkg/testdata.
func writeInitramfs(path, base, bin string, cfg Config, guestTimeout time.Duration) (err error) {
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write initramfs: %w", cerr)
		}
	}()
	in, err := os.Open(base)
	if err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	defer in.Close()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("write initramfs: copy base: %w", err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	c := newCPIOWriter(out)
	c.Dir("svcplan")
	c.Dir("svcplan/pkg")
	c.File("svcplan/pkg.test", 0o755, data)
	c.File("svcplan/run.sh", 0o644, []byte(runScript(cfg, guestTimeout)))
	testdata := filepath.Join(cfg.Package, "testdata")
	if fi, err := os.Stat(testdata); err == nil && fi.IsDir() {
		if err := c.Tree("svcplan/pkg/testdata", testdata); err != nil {
			return fmt.Errorf("write initramfs: copy testdata: %w", err)
		}
	}
	return c.Close()
}

// result is what the guest reported.
type result struct {
	reported bool          // the exit marker was seen
	code     int           // the exit code it gave
	boot     time.Duration // from qemu's start to the booted marker
}

// boot runs qemu with kernel and initrd until the guest powers off, logging
// its console to t.
func boot(ctx context.Context, t *testing.T, kernel, initrd string, cfg Config) (result, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, qemuBinary,
		// The default CPU model (qemu64) boots faster under TCG than "max".
		"-accel", "tcg",
		"-m", strconv.Itoa(cfg.Memory), "-smp", strconv.Itoa(cfg.CPUs),
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-serial", "stdio", "-nic", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 mitigations=off")
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, fmt.Errorf("start qemu: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("start qemu: %w", err)
	}
	res := readConsole(t, stdout, start)
	werr := cmd.Wait()
	if stderr.Len() > 0 {
		t.Logf("qemu stderr: %s", strings.TrimSpace(stderr.String()))
	}
	if werr != nil {
		return res, fmt.Errorf("qemu: %w", werr)
	}
	return res, nil
}

// readConsole logs every console line to t and picks out the markers.
func readConsole(t *testing.T, r io.Reader, start time.Time) result {
	t.Helper()
	var res result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if rest, ok := strings.CutPrefix(line, exitMarker); ok {
			if code, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				res.reported, res.code = true, code
			}
		}
		if strings.HasPrefix(line, bootedMarker) {
			res.boot = time.Since(start)
		}
		t.Log(line)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Logf("vmtest: read console: %v", err)
	}
	return res
}
