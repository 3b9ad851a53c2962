package iptables

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func boolPtr(b bool) *bool { return &b }

func TestParseRule(t *testing.T) {
	tests := []struct {
		name string
		text string
		want Rule
	}{
		{name: "empty", text: "", want: Rule{}},
		{
			name: "cluster IP",
			text: `-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-WEB`,
			want: Rule{Protocol: "tcp", Destination: AddrMatch{Prefix: netip.MustParsePrefix("10.96.0.10/32")},
				Modules: []string{"comment", "tcp"}, Comment: "ns/web:http cluster IP",
				DestinationPort: &PortMatch{Ports: PortRange{80, 80}}, Target: "KUBE-SVC-WEB"},
		},
		{
			name: "iptables-save spelling with implicit tcp match",
			text: `-d 10.96.0.10/32 -p TCP --dport 80:90 ! --sport 1024: -j ACCEPT`,
			want: Rule{Protocol: "tcp", Destination: AddrMatch{Prefix: netip.MustParsePrefix("10.96.0.10/32")},
				Modules:         []string{"tcp"},
				DestinationPort: &PortMatch{Ports: PortRange{80, 90}}, SourcePort: &PortMatch{Ports: PortRange{1024, 65535}, Invert: true},
				Target: "ACCEPT"},
		},
		{
			name: "negated source and netmask",
			text: `! -s 10.244.0.0/255.255.0.0 -j KUBE-MARK-MASQ`,
			want: Rule{Source: AddrMatch{Prefix: netip.MustParsePrefix("10.244.0.0/16"), Invert: true}, Target: "KUBE-MARK-MASQ"},
		},
		{
			name: "interfaces",
			text: `-i eth0 ! -o veth+ -g KUBE-X`,
			want: Rule{InInterface: InterfaceMatch{Name: "eth0"}, OutInterface: InterfaceMatch{Name: "veth+", Invert: true},
				Target: "KUBE-X", Goto: true},
		},
		{
			name: "statistic",
			text: `-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A`,
			want: Rule{Modules: []string{"statistic"}, Statistic: &StatisticMatch{Mode: "random", Probability: 0.5}, Target: "KUBE-SEP-A"},
		},
		{
			name: "recent check",
			text: `-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A`,
			want: Rule{Modules: []string{"recent"}, Recent: &RecentMatch{Name: "KUBE-SEP-A", Command: "rcheck", Seconds: 10800,
				Reap: true, Mask: netip.MustParseAddr("255.255.255.255")}, Target: "KUBE-SEP-A"},
		},
		{
			name: "recent set and DNAT",
			text: `-m tcp -p tcp -m recent --name KUBE-SEP-A --set -j DNAT --to-destination 10.244.1.5:8080`,
			want: Rule{Protocol: "tcp", Modules: []string{"tcp", "recent"}, Recent: &RecentMatch{Name: "KUBE-SEP-A", Command: "set"},
				Target: "DNAT", TargetOptions: TargetOptions{ToDestination: netip.MustParseAddrPort("10.244.1.5:8080")}},
		},
		{
			name: "IPv6 DNAT",
			text: `-j DNAT --to-destination [fd00::1]:80 --random`,
			want: Rule{Target: "DNAT", TargetOptions: TargetOptions{ToDestination: netip.MustParseAddrPort("[fd00::1]:80"), Random: true}},
		},
		{
			name: "DNAT without port",
			text: `-j DNAT --to-destination fd00::1`,
			want: Rule{Target: "DNAT", TargetOptions: TargetOptions{ToDestination: netip.AddrPortFrom(netip.MustParseAddr("fd00::1"), 0)}},
		},
		{
			name: "mark match and or-mark",
			text: `-m mark ! --mark 0x00004000/0x00004000 -j MARK --or-mark 0x4000`,
			want: Rule{Modules: []string{"mark"}, Mark: &MarkMatch{Value: 0x4000, Mask: 0x4000, Invert: true},
				Target: "MARK", TargetOptions: TargetOptions{Mark: &MarkSet{Value: 0x4000, Mask: 0x4000}}},
		},
		{
			name: "mark without mask and xor-mark",
			text: `-m mark --mark 1 -j MARK --xor-mark 0x4000`,
			want: Rule{Modules: []string{"mark"}, Mark: &MarkMatch{Value: 1, Mask: 0xffffffff},
				Target: "MARK", TargetOptions: TargetOptions{Mark: &MarkSet{Value: 0x4000}}},
		},
		{
			name: "set-mark and and-mark forms",
			text: `-j MARK --set-mark 0x1/0x3`,
			want: Rule{Target: "MARK", TargetOptions: TargetOptions{Mark: &MarkSet{Value: 1, Mask: 3}}},
		},
		{
			name: "conntrack",
			text: `-m conntrack ! --ctstate related,ESTABLISHED,DNAT -j DROP`,
			want: Rule{Modules: []string{"conntrack"}, ConnState: &ConnStateMatch{Module: "conntrack",
				States: []string{"RELATED", "ESTABLISHED", "DNAT"}, Invert: true}, Target: "DROP"},
		},
		{
			name: "addrtype",
			text: `-m addrtype ! --src-type LOCAL --dst-type local,UNICAST -j KUBE-NODEPORTS`,
			want: Rule{Modules: []string{"addrtype"}, AddrType: &AddrTypeMatch{SrcTypes: []string{"LOCAL"}, NotSrc: true,
				DstTypes: []string{"LOCAL", "UNICAST"}}, Target: "KUBE-NODEPORTS"},
		},
		{
			name: "multiport",
			text: `-p udp -m multiport ! --dports 53,1000:2000 -j REJECT --reject-with icmp-port-unreachable`,
			want: Rule{Protocol: "udp", Modules: []string{"multiport"},
				Multiport: &MultiportMatch{Option: "--dports", Ports: []PortRange{{53, 53}, {1000, 2000}}, Invert: true},
				Target:    "REJECT", TargetOptions: TargetOptions{RejectWith: "icmp-port-unreachable"}},
		},
		{
			name: "two sets",
			text: `-m set --match-set KUBE-CLUSTER-IP dst,dst -m set ! --match-set KUBE-LOOP-BACK dst,dst,src -j ACCEPT`,
			want: Rule{Modules: []string{"set", "set"}, Sets: []SetMatch{
				{Name: "KUBE-CLUSTER-IP", Flags: []string{"dst", "dst"}},
				{Name: "KUBE-LOOP-BACK", Flags: []string{"dst", "dst", "src"}, Invert: true}}, Target: "ACCEPT"},
		},
		{
			name: "physdev",
			text: `-m physdev ! --physdev-is-in --physdev-out veth0 -j ACCEPT`,
			want: Rule{Modules: []string{"physdev"}, Physdev: &PhysdevMatch{IsIn: boolPtr(false), Out: InterfaceMatch{Name: "veth0"}},
				Target: "ACCEPT"},
		},
		{
			name: "masquerade and redirect",
			text: `-j MASQUERADE --to-ports 1000-2000 --random-fully`,
			want: Rule{Target: "MASQUERADE", TargetOptions: TargetOptions{ToPorts: PortRange{1000, 2000}, RandomFully: true}},
		},
		{
			name: "protocol by number and all",
			text: `-p 17 -m udp --dport 53`,
			want: Rule{Protocol: "udp", Modules: []string{"udp"}, DestinationPort: &PortMatch{Ports: PortRange{53, 53}}},
		},
		{
			name: "long options",
			text: `--protocol tcp --source 1.2.3.4 --destination 5.6.7.8/8 --in-interface lo --match comment --comment x --jump ACCEPT`,
			want: Rule{Protocol: "tcp", Source: AddrMatch{Prefix: netip.MustParsePrefix("1.2.3.4/32")},
				Destination: AddrMatch{Prefix: netip.MustParsePrefix("5.0.0.0/8")}, InInterface: InterfaceMatch{Name: "lo"},
				Modules: []string{"comment"}, Comment: "x", Target: "ACCEPT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRule(tt.text)
			if err != nil {
				t.Fatalf("ParseRule(%q): %v", tt.text, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{}, netip.AddrPort{})); diff != "" {
				t.Errorf("ParseRule(%q) mismatch (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestParseRuleErrors(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantErr error
	}{
		{"unbalanced quote", `-m comment --comment "abc`, ErrUnbalancedQuote},
		{"unknown match", `-m limit --limit 5/s -j ACCEPT`, ErrUnknownMatch},
		{"unknown match option", `-m tcp -p tcp --syn -j ACCEPT`, ErrUnknownOption},
		{"unknown target option", `-j ACCEPT --to-destination 1.2.3.4`, ErrUnknownOption},
		{"option without module", `--dport 80 -j ACCEPT`, ErrUnknownOption},
		{"port option with negated protocol", `! -p tcp --dport 80`, ErrUnknownOption},
		{"missing value", `-j`, ErrSyntax},
		{"stray argument", `-j ACCEPT foo`, ErrSyntax},
		{"double negation", `! ! -s 1.2.3.4`, ErrSyntax},
		{"negation at end", `-j ACCEPT !`, ErrSyntax},
		{"negated match load", `! -m tcp`, ErrSyntax},
		{"two targets", `-j ACCEPT -j DROP`, ErrSyntax},
		{"hostname", `-s example.com -j ACCEPT`, ErrSyntax},
		{"prefix too long", `-s 10.0.0.0/33`, ErrSyntax},
		{"non-contiguous mask", `-s 10.0.0.0/255.0.255.0`, ErrUnsupported},
		{"address list", `-d 1.2.3.4,5.6.7.8`, ErrSyntax},
		{"bad port", `-p tcp --dport http`, ErrSyntax},
		{"bad port range", `-p tcp --dport 90:80`, ErrSyntax},
		{"tcp match without -p", `-m tcp --dport 80`, ErrSyntax},
		{"repeated match", `-m comment --comment a -m comment --comment b`, ErrUnsupported},
		{"bad probability", `-m statistic --mode random --probability 1.5`, ErrSyntax},
		{"statistic without mode", `-m statistic --probability 0.5`, ErrSyntax},
		{"recent without command", `-m recent --name X`, ErrSyntax},
		{"recent with two commands", `-m recent --set --rcheck`, ErrSyntax},
		{"bad mark", `-m mark --mark 0xzz`, ErrSyntax},
		{"mark match without mark", `-m mark -j ACCEPT`, ErrSyntax},
		{"MARK without change", `-j MARK`, ErrSyntax},
		{"DNAT without destination", `-j DNAT`, ErrSyntax},
		{"DNAT range", `-j DNAT --to-destination 1.2.3.4-1.2.3.5`, ErrSyntax},
		{"bad conntrack state", `-m conntrack --ctstate NEWISH`, ErrSyntax},
		{"addrtype without type", `-m addrtype -j ACCEPT`, ErrSyntax},
		{"bad address type", `-m addrtype --dst-type HOME`, ErrSyntax},
		{"set without match-set", `-m set -j ACCEPT`, ErrSyntax},
		{"bad set flag", `-m set --match-set X dst,up`, ErrSyntax},
		{"multiport without ports", `-p tcp -m multiport -j ACCEPT`, ErrSyntax},
		{"target with a space", `-j "A B"`, ErrSyntax},
		{"negated target option", `-j MARK ! --or-mark 1`, ErrSyntax},
		{"negated comment", `-m comment ! --comment x`, ErrSyntax},
		{"source twice", `-s 1.2.3.4 -s 5.6.7.8`, ErrSyntax},
		{"port twice", `-p tcp --dport 80 --dport 81`, ErrSyntax},
		{"port twice in a match", `-p tcp -m tcp --dport 80 --destination-port 81 --dport 82`, ErrSyntax},
		{"target option twice", `-j DNAT --to-destination 1.2.3.4 --to-destination 1.2.3.5`, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRule(tt.text)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseRule(%q) = %+v, %v; want error %v", tt.text, got, err, tt.wantErr)
			}
		})
	}
}

func TestCanonicalRule(t *testing.T) {
	tests := []struct {
		name   string
		family Family
		text   string
		want   string
	}{
		{
			name: "kube-proxy service rule",
			text: `-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-WEB`,
			want: `-d 10.96.0.10/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-WEB`,
		},
		{
			name: "probability rounded as the kernel keeps it",
			text: `-m statistic --mode random --probability 0.3333333333 -j X`,
			want: `-m statistic --mode random --probability 0.33333333349 -j X`,
		},
		{
			name: "or-mark as set-xmark",
			text: `-j MARK --or-mark 0x00004000`,
			want: `-j MARK --set-xmark 0x4000/0x4000`,
		},
		{
			name: "recent defaults",
			text: `-m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A`,
			want: `-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A`,
		},
		{
			name:   "IPv6 defaults",
			family: IPv6,
			text:   `-m recent --set -j REJECT`,
			want:   `-m recent --set --name DEFAULT --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j REJECT --reject-with icmp6-port-unreachable`,
		},
		{
			name: "implicit protocol match and quoting",
			text: `-p tcp --dport 80 -m comment --comment "it's" -m comment2x`,
		},
		{
			name: "comment quoting",
			text: `-m comment --comment plain-word_1 -j ACCEPT`,
			want: `-m comment --comment plain-word_1 -j ACCEPT`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.family
			if f == "" {
				f = IPv4
			}
			got, err := CanonicalRule(f, tt.text)
			if tt.want == "" {
				if err == nil {
					t.Errorf("CanonicalRule(%q) = %q, want an error", tt.text, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("CanonicalRule(%q) = %q, %v; want %q", tt.text, got, err, tt.want)
			}
		})
	}
}

func TestMarkSetApply(t *testing.T) {
	tests := []struct {
		name string
		text string
		mark uint32
		want uint32
	}{
		{"or", "--or-mark 0x4000", 0x1, 0x4001},
		{"xor clears", "--xor-mark 0x4000", 0x4001, 0x1},
		{"and", "--and-mark 0xff", 0x4001, 0x1},
		{"set with mask", "--set-mark 0x2/0x3", 0x4001, 0x4002},
		{"set", "--set-mark 0x2", 0x4001, 0x2},
		{"set-xmark", "--set-xmark 0x4000/0x4000", 0x1, 0x4001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRule("-j MARK " + tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.TargetOptions.Mark.Apply(tt.mark); got != tt.want {
				t.Errorf("MARK %s on %#x = %#x, want %#x", tt.text, tt.mark, got, tt.want)
			}
		})
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		`-m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-WEB`,
		`-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A`,
		`-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A`,
		`-m mark ! --mark 0x4000/0x4000 -j RETURN`,
		`-j DNAT --to-destination [fd00::1]:80`,
		`-p udp -m multiport --dports 53,1000:2000 -m set ! --match-set S dst,src -j REJECT`,
		`-m physdev ! --physdev-is-in -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j MARK --set-mark 1/3`,
		`-i eth+ ! -o lo -j LOG --log-prefix "a \"b\""`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := ParseRule(text)
		if err != nil {
			return
		}
		c := r.String()
		r2, err := ParseRule(c)
		if err != nil {
			t.Fatalf("ParseRule(%q) = %v after canonical form of %q", c, err, text)
		}
		if c2 := r2.String(); c2 != c {
			t.Fatalf("canonical form not stable: %q then %q", c, c2)
		}
	})
}
