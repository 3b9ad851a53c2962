package main

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/translate"
)

func (e *env) plan(args []string) error {
	var in inputFlags
	fs := e.newFlagSet("plan", "plan --mode iptables|ipvs|nftables|userspace [-f FILE] [--node NAME] [--family ipv4|ipv6]")
	in.register(fs, true)
	family := fs.String("family", "", "print only this `family` (ipv4 or ipv6), as input for iptables-restore or ip6tables-restore")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(in.files) > 1 {
		return fmt.Errorf("plan takes one -f, got %d", len(in.files))
	}
	if *family != "" && *family != string(iptables.IPv4) && *family != string(iptables.IPv6) {
		return fmt.Errorf("--family %q: want ipv4 or ipv6", *family)
	}
	st, err := e.load(&in, first(in.files))
	if err != nil {
		return err
	}
	p, err := compile(st, in.mode)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	for _, np := range p.NFTables {
		if *family != "" && string(np.FamilyOrDefault()) != *family {
			continue
		}
		if *family == "" {
			fmt.Fprintf(w, "# %s: input for nft -f\n", np.FamilyOrDefault())
		}
		if _, err := np.WriteTo(w); err != nil {
			return err
		}
	}
	if p.Userspace != nil {
		fmt.Fprintln(w, "# userspace proxy listeners")
		for _, line := range strings.Split(strings.TrimSuffix(p.Userspace.String(), "\n"), "\n") {
			fmt.Fprintln(w, "#", line)
		}
	}
	if p.IPVS != nil && *family == "" {
		if err := writeIPVS(w, p); err != nil {
			return err
		}
	}
	for _, ip := range p.IPTables {
		if *family != "" && string(ip.FamilyOrDefault()) != *family {
			continue
		}
		tool := "iptables-restore"
		if ip.FamilyOrDefault() == iptables.IPv6 {
			tool = "ip6tables-restore"
		}
		if *family == "" {
			fmt.Fprintf(w, "# %s: input for %s --noflush\n", ip.FamilyOrDefault(), tool)
		}
		if _, err := ip.WriteTo(w); err != nil {
			return err
		}
	}
	return w.Flush()
}

// writeIPVS prints the ipset, ipvsadm and address texts of an IPVS-mode
// plan, each after a label line naming the tool that reads it.
func writeIPVS(w *bufio.Writer, p *translate.Plan) error {
	fmt.Fprintln(w, "# ipset: input for ipset restore")
	if _, err := p.IPSets.WriteTo(w); err != nil {
		return err
	}
	fmt.Fprintln(w, "# ipvsadm: input for ipvsadm -R")
	if _, err := p.IPVS.WriteTo(w); err != nil {
		return err
	}
	fmt.Fprintln(w, "# addresses: input for ip -batch")
	_, err := w.WriteString(p.IPVS.AddressText())
	return err
}

func first(files []string) string {
	if len(files) == 0 {
		return ""
	}
	return files[0]
}
