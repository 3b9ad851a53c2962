package ipvs

import (
	"errors"
	"strings"
)

// ApplyError is an Apply or Cleanup that failed, shaped like
// [net.OpError]: what was being done, on which object, and the cause,
// often a kernel error or one of the sentinels below.
type ApplyError struct {
	// Op is the operation: "validate" (the plan was refused before
	// anything was sent), "netns", "read", "sysctl", "link", "address",
	// "add-service", "update-service", "delete-service", "add-real",
	// "update-real" or "delete-real".
	Op string
	// Object names what was concerned, such as "tcp/10.96.0.1:80",
	// "tcp/10.96.0.1:80 -> 10.244.1.5:8080", "kube-ipvs0" or
	// "net/ipv4/vs/conntrack"; empty means nothing in particular.
	Object string
	// Err is the cause.
	Err error
}

// Error returns the error as text, such as
// `ipvs add-service tcp/10.96.0.1:80: ip_vs module not loaded`.
func (e *ApplyError) Error() string {
	var b strings.Builder
	b.WriteString("ipvs ")
	b.WriteString(e.Op)
	if e.Object != "" {
		b.WriteByte(' ')
		b.WriteString(e.Object)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *ApplyError) Unwrap() error { return e.Err }

// Sentinel errors of the appliers.
var (
	// ErrNoIPVS is returned when the kernel has no IPVS: the ip_vs module
	// is not loaded (and could not be), or the kernel lacks it.
	ErrNoIPVS = errors.New("ip_vs module not loaded")
	// ErrNoDummy is returned when the kernel cannot make dummy links:
	// the dummy module is not loaded.
	ErrNoDummy = errors.New("dummy link type not available (dummy module not loaded)")
	// ErrNotRoot is returned when the kernel refuses a change or a read
	// for lack of privilege.
	ErrNotRoot = errors.New("permission denied: changing IPVS needs root (CAP_NET_ADMIN)")
	// ErrNotNetNS is returned when the path or descriptor given with
	// [WithNetNS] or [WithNetNSFd] is not a network namespace.
	ErrNotNetNS = errors.New("not a network namespace")
	// ErrForeignLink is returned when the plan's interface exists and is
	// not a dummy link: the applier does not take it over.
	ErrForeignLink = errors.New("interface exists and is not a dummy link")
	// ErrServiceExists and ErrNoService are what a [Fake] returns, as the
	// kernel answers EEXIST and ESRCH, for adding a virtual or real
	// server that exists and changing one that does not.
	ErrServiceExists = errors.New("object exists")
	ErrNoService     = errors.New("no such service or destination")
	// ErrRealFamily is returned by a [Fake] for a real server of the
	// other address family than its virtual server's.
	ErrRealFamily = errors.New("real server of the wrong address family")
)
