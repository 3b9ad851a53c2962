package main

import (
	"context"
	"fmt"
	"os"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/translate"
)

// checkForeignNetNS refuses a path that is not a network namespace other
// than the one this process runs in, before anything is written.
func checkForeignNetNS(path string) error {
	target, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking --netns: %w", err)
	}
	own, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("checking --netns against this process's namespace: %w", err)
	}
	if os.SameFile(target, own) {
		return fmt.Errorf("--netns %s is this process's own network namespace; refusing to program it", path)
	}
	return nil
}

// apply makes the namespace at path hold plan: each family's iptables
// plan through its own applier, or the nftables tables through one.
func apply(ctx context.Context, plan *translate.Plan, path string) error {
	switch plan.Mode {
	case translate.ModeIPTables:
		for _, p := range plan.IPTables {
			k, err := iptables.New(p.FamilyOrDefault(), iptables.WithNetNS(path))
			if err != nil {
				return err
			}
			if err := k.Apply(ctx, p); err != nil {
				return err
			}
		}
	case translate.ModeNFTables:
		k, err := nftables.New(nftables.WithNetNS(path))
		if err != nil {
			return err
		}
		for _, p := range plan.NFTables {
			if err := k.Apply(ctx, p); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("applying mode %q: %w", plan.Mode, translate.ErrUnsupportedMode)
	}
	return nil
}

// cleanup removes what mode's appliers own from the namespace at path:
// the KUBE- chains of both iptables families, or the kube-proxy nftables
// tables.
func cleanup(ctx context.Context, mode translate.Mode, path string) error {
	switch mode {
	case translate.ModeIPTables:
		for _, f := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			k, err := iptables.New(f, iptables.WithNetNS(path))
			if err != nil {
				return err
			}
			if err := k.Cleanup(ctx); err != nil {
				return err
			}
		}
	case translate.ModeNFTables:
		k, err := nftables.New(nftables.WithNetNS(path))
		if err != nil {
			return err
		}
		return k.Cleanup(ctx)
	default:
		return fmt.Errorf("cleaning up mode %q: %w", mode, translate.ErrUnsupportedMode)
	}
	return nil
}
