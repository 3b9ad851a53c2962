// Package vmtest runs a package's tests under a real Debian cloud kernel in
// qemu, for the kernel features the test machines' own kernel lacks: IPVS,
// dummy links (kube-ipvs0), and a full set of netfilter, ipset and x_tables
// modules. It is the VM tier of svcplan's tests; the kernel tier
// ([github.com/svcplan/svcplan/internal/netnstest]) runs on the host.
//
// # Assets
//
// hack/vm-assets.sh (run as root; hack/test.sh runs it) installs qemu and
// the tools, downloads linux-image-VERSION-cloud-amd64 (the package
// linux-image-cloud-amd64 depends on) with `apt-get download`, unpacks it,
// and writes two files to /var/cache/svcplan-vm ([CacheEnv] overrides it):
//
//   - vmlinuz, the kernel;
//   - initramfs.cpio, an uncompressed cpio archive with busybox, ip
//     (iproute2), iptables (nft and legacy, with restore and save and their
//     extensions), ipset, ipvsadm, nft and conntrack with their shared
//     libraries, the kernel modules (IPVS and its schedulers, conntrack,
//     NAT, nf_tables expressions, x_tables matches and targets, ipset
//     types, dummy, veth, bridge, and whatever they depend on) with a
//     modules.dep for on-demand loading, and an /init.
//
// The script is idempotent: it rebuilds only when it changed or Debian has
// a new kernel. /init mounts proc, sys, devtmpfs, devpts and tmpfs on /run
// and /tmp, insmods the modules in dependency order, brings lo up, prints
// "svcplan-vm: booted", runs /svcplan/run.sh, prints
// "SVCPLAN-VM-EXIT code" and powers off.
//
// # Host and guest tests
//
// A package adds one host test that calls [Run], and guest tests, named
// TestGuest... by convention, that start with [RequireGuest]:
//
//	func TestVM(t *testing.T) {
//		vmtest.Run(t, vmtest.Config{Run: "^TestGuest"})
//	}
//
//	func TestGuestDummyLink(t *testing.T) {
//		vmtest.RequireGuest(t, "TestVM")
//		ns := netnstest.NewNS(t) // tests make their namespaces in the guest too
//		...
//	}
//
// [Run] builds the package's test binary with `go test -c` and CGO off (so
// it is static), appends a second cpio archive holding it, a run script
// and the package's testdata to the base initramfs, and boots
// `qemu-system-x86_64 -accel tcg` (software emulation; no -netdev, so the
// host's network is never touched) with the console on the serial port.
// The guest runs the binary as root with -test.v, the [Config.Run]
// pattern and -test.timeout, in a directory holding testdata; every
// SVCPLAN_* variable of the host is passed on (so SVCPLAN_REQUIRE_KERNEL=1
// holds in the guest too), and [GuestEnv]=1 is set, which [Inside]
// reports. Each console line is logged with t.Log as it arrives; t fails
// if the guest's tests fail, if the guest ends without its end marker
// (a kernel panic, say), or if the time runs out.
//
// On the host, guest tests skip through [RequireGuest], and that skip never
// fails, whatever SVCPLAN_REQUIRE_KERNEL and SVCPLAN_REQUIRE_VM say: the
// host test runs them. [Run] itself skips when it is not on linux/amd64,
// not root, or qemu or the assets are missing, and fails instead when
// SVCPLAN_REQUIRE_VM=1, as hack/test.sh sets when run as root.
//
// # In the guest
//
// The guest is a 2-CPU, 1 GiB machine ([Config.CPUs], [Config.Memory])
// whose root file system is the initramfs: everything is in memory, and
// /run/netns works, so [github.com/svcplan/svcplan/internal/netnstest]
// topologies, veth pairs and `ip netns exec` do. Tools are found on PATH
// (/usr/sbin, /usr/bin); iptables, iptables-restore and iptables-save are
// the nft variants, as on Debian, and the -legacy ones are there too. The
// shell is busybox's, which runs its own applets before PATH: a shell
// script must call /usr/bin/ip by its path to get iproute2 (Go code that
// runs "ip" through os/exec gets iproute2). Kernel modules not loaded at
// boot are loaded on demand through modprobe, as on a normal system.
//
// # Time
//
// On the 2-core test machine, shared with other work, booting to the test
// binary takes 8.5 s when the machine is quiet (the kernel 3–4 s, loading
// the modules 2.5 s, under software emulation) and up to 40 s under heavy
// load; building the test binary takes 1–7 s, and this package's whole
// host test 22–80 s. Code runs several times
// slower in the guest than on the host; give the guest's tests room with
// [Config.Timeout] (5 minutes by default; the host waits 90 s longer for
// boot and power-off, and never past its own deadline).
package vmtest
