package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/svcplan/svcplan/ipset"
	"github.com/svcplan/svcplan/ipvs"
)

func TestPlanIPVS(t *testing.T) {
	out, stderr, err := runCLI(t, "plan", "--mode", "ipvs")
	if err != nil {
		t.Fatalf("plan --mode ipvs: %v\n%s", err, stderr)
	}
	labels := []string{
		"# ipset: input for ipset restore\n",
		"# ipvsadm: input for ipvsadm -R\n",
		"# addresses: input for ip -batch\n",
		"# ipv4: input for iptables-restore --noflush\n",
	}
	last := -1
	for _, l := range labels {
		i := strings.Index(out, l)
		if i < 0 || i < last {
			t.Fatalf("plan --mode ipvs lacks label %q or has it out of order:\n%.600s", l, out)
		}
		last = i
	}
	sets := section(out, labels[0], labels[1])
	if p, err := ipset.ParseSave(sets); err != nil || p.Set("KUBE-CLUSTER-IP") == nil || len(p.Set("KUBE-CLUSTER-IP").Entries) == 0 {
		t.Errorf("ipset section does not parse into a KUBE-CLUSTER-IP with members: %v\n%s", err, sets)
	}
	vs := section(out, labels[1], labels[2])
	p, err := ipvs.ParseSave(vs)
	if err != nil || p.Validate() != nil || len(p.VirtualServers) == 0 {
		t.Errorf("ipvsadm section does not parse into valid virtual servers: %v\n%s", err, vs)
	}
	if !strings.Contains(vs, "-A -t 10.96.0.1:443 -s rr\n") {
		t.Errorf("ipvsadm section lacks the kubernetes service:\n%s", vs)
	}
	if addr := section(out, labels[2], labels[3]); !strings.HasPrefix(addr, "link add kube-ipvs0 type dummy\naddr add 10.96.0.1/32 dev kube-ipvs0\n") {
		t.Errorf("addresses section = %q", addr)
	}
	if !strings.Contains(out, "-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT") {
		t.Errorf("iptables section lacks the cluster IP set match")
	}
}

// section returns the text between two labels.
func section(out, from, to string) string {
	i, j := strings.Index(out, from), strings.Index(out, to)
	if i < 0 || j < i {
		return ""
	}
	return out[i+len(from) : j]
}

func TestStatsIPVS(t *testing.T) {
	counts := map[int][2]int{}
	for _, n := range []int{10, 1000} {
		out, stderr, err := runCLI(t, "stats", "--mode", "ipvs", "--synthetic", strconv.Itoa(n))
		if err != nil {
			t.Fatalf("stats: %v\n%s", err, stderr)
		}
		m := regexp.MustCompile(`(?m)^\s*ipv4\s+(\d+)\s+(\d+)\s*$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("stats --mode ipvs --synthetic %d shows no rule comparison:\n%s", n, out)
		}
		a, _ := strconv.Atoi(m[1])
		b, _ := strconv.Atoi(m[2])
		counts[n] = [2]int{a, b}
		if want := strconv.Itoa(n) + " virtual servers"; !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	if counts[10][0] != counts[1000][0] {
		t.Errorf("ipvs-mode rules grew with services: %d at 10, %d at 1000", counts[10][0], counts[1000][0])
	}
	if counts[1000][1] <= counts[10][1] || counts[1000][1] < 10*counts[1000][0] {
		t.Errorf("iptables-mode rules %v do not grow beside ipvs mode's", counts)
	}
}

func TestTraceIPVS(t *testing.T) {
	tests := []struct {
		name, src, dst string
		want           []string
	}{
		{"cluster IP", "10.244.5.5", "10.96.0.1:443", []string{"100.00% forward 10.0.0.10:6443", "via ipvs 10.96.0.1:443"}},
		{"other port of a service address", "10.244.5.5", "10.96.0.1:444", []string{"reject"}},
		{"not a service", "10.244.5.5", "192.0.2.99:80", []string{"pass"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runCLI(t, "trace", "--mode", "ipvs", "--src", tc.src, "--dst", tc.dst)
			if err != nil {
				t.Fatalf("trace: %v\n%s", err, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("trace --mode ipvs %s -> %s lacks %q:\n%s", tc.src, tc.dst, w, out)
				}
			}
		})
	}
}

func TestDiffIPVS(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old.yaml")
	if err := os.WriteFile(old, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(dir, "new.yaml")
	if err := os.WriteFile(cur, []byte(strings.Replace(string(src), "10.244.2.2", "10.244.2.9", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, "diff", "--mode", "ipvs", "--node", "node-a", "-f", old, "-f", old)
	if err != nil {
		t.Fatalf("diff: %v\n%s", err, stderr)
	}
	if strings.TrimSpace(out) != "no changes" {
		t.Errorf("diff of a file with itself = %q, want no changes", out)
	}
	out, stderr, err = runCLI(t, "diff", "--mode", "ipvs", "--node", "node-a", "-f", old, "-f", cur)
	if err != nil {
		t.Fatalf("diff: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "~ ipvs tcp ") || strings.Contains(out, "no changes") {
		t.Errorf("diff after moving an endpoint = %q, want a changed virtual server", out)
	}
}
