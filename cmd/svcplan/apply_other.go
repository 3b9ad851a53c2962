//go:build !linux

package main

import (
	"fmt"

	"github.com/svcplan/svcplan/iptables"
)

func newApplier(fam iptables.Family, _ ...iptables.Option) (iptables.Applier, error) {
	return nil, fmt.Errorf("applying %s rules needs Linux; use 'svcplan plan' for a dry run", fam)
}
