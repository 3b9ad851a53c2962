package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/svcplan/svcplan/iptables"
)

func newApplier(fam iptables.Family, opts ...iptables.Option) (iptables.Applier, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("changing %s rules needs root (CAP_NET_ADMIN); run as root, or use 'svcplan plan' for a dry run", fam)
	}
	k, err := iptables.New(fam, opts...)
	if errors.Is(err, iptables.ErrToolMissing) {
		return nil, fmt.Errorf("%w; install the iptables package (apt-get install iptables)", err)
	}
	return k, err
}
