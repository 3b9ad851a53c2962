package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrSaveSyntax is wrapped by the errors of [ParseSave] for text it cannot
// read.
var ErrSaveSyntax = errors.New("ipvsadm save syntax")

// ParseSave reads "ipvsadm -S -n" output (or [Plan.WriteTo] output) into
// a Plan's virtual servers, sorted (see [Plan.Sort]); Interface and
// Addresses stay empty. It knows what [Plan.WriteTo] writes: -A with -t,
// -u or --sctp-service, -s (absent, ipvsadm's default wlc) and -p (and -M
// when it is the full-length netmask), and -a with -r, -m and -w.
// Anything else — fwmark services, other forwarding methods, scheduler
// flags, persistence engines, one-packet scheduling, thresholds — is an
// error naming the line, so that a Plan never silently misses part of what
// the kernel does. Blank lines and "#" lines are skipped.
func ParseSave(text string) (*Plan, error) {
	p := &Plan{}
	index := map[vsKey]int{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if err := p.parseLine(index, line); err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
		}
	}
	p.Sort()
	return p, nil
}

type vsKey struct {
	proto Protocol
	addr  netip.AddrPort
}

func (p *Plan) parseLine(index map[vsKey]int, line string) error {
	f := strings.Fields(line)
	if len(f) < 3 {
		return fmt.Errorf("too few words: %w", ErrSaveSyntax)
	}
	proto, addr, err := parseService(f[1], f[2])
	if err != nil {
		return err
	}
	key := vsKey{proto, addr}
	switch f[0] {
	case "-A", "--add-service":
		if _, dup := index[key]; dup {
			return fmt.Errorf("virtual server added twice: %w", ErrSaveSyntax)
		}
		v, err := parseServiceOptions(proto, addr, f[3:])
		if err != nil {
			return err
		}
		index[key] = len(p.VirtualServers)
		p.VirtualServers = append(p.VirtualServers, v)
		return nil
	case "-a", "--add-server":
		i, ok := index[key]
		if !ok {
			return fmt.Errorf("real server of a virtual server not added before: %w", ErrSaveSyntax)
		}
		r, err := parseRealServer(f[3:])
		if err != nil {
			return err
		}
		p.VirtualServers[i].RealServers = append(p.VirtualServers[i].RealServers, r)
		return nil
	}
	return fmt.Errorf("command %q: %w", f[0], ErrSaveSyntax)
}

func parseService(flag, addr string) (Protocol, netip.AddrPort, error) {
	var proto Protocol
	switch flag {
	case "-t", "--tcp-service":
		proto = TCP
	case "-u", "--udp-service":
		proto = UDP
	case "--sctp-service":
		proto = SCTP
	default:
		return "", netip.AddrPort{}, fmt.Errorf("service kind %q: %w", flag, ErrSaveSyntax)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("service address %q: %w", addr, ErrSaveSyntax)
	}
	return proto, ap, nil
}

func parseServiceOptions(proto Protocol, addr netip.AddrPort, opts []string) (VirtualServer, error) {
	// Without -s, ipvsadm uses wlc.
	v := VirtualServer{Protocol: proto, Addr: addr, Scheduler: WeightedLeastConnection}
	for i := 0; i < len(opts); i += 2 {
		if i+1 >= len(opts) {
			return v, fmt.Errorf("option %q without value: %w", opts[i], ErrSaveSyntax)
		}
		val := opts[i+1]
		switch opts[i] {
		case "-s", "--scheduler":
			v.Scheduler = Scheduler(val)
		case "-p", "--persistent":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n == 0 {
				return v, fmt.Errorf("persistence timeout %q: %w", val, ErrSaveSyntax)
			}
			v.Timeout = time.Duration(n) * time.Second
		case "-M", "--netmask":
			if val != "255.255.255.255" && val != "128" {
				return v, fmt.Errorf("persistence netmask %q not full length: %w", val, ErrSaveSyntax)
			}
		default:
			return v, fmt.Errorf("service option %q: %w", opts[i], ErrSaveSyntax)
		}
	}
	return v, nil
}

func parseRealServer(opts []string) (RealServer, error) {
	var r RealServer
	masq, haveAddr := false, false
	for i := 0; i < len(opts); i++ {
		switch o := opts[i]; o {
		case "-m", "--masquerading":
			masq = true
		case "-r", "--real-server", "-w", "--weight":
			if i+1 >= len(opts) {
				return r, fmt.Errorf("option %q without value: %w", o, ErrSaveSyntax)
			}
			i++
			if o == "-r" || o == "--real-server" {
				ap, err := netip.ParseAddrPort(opts[i])
				if err != nil {
					return r, fmt.Errorf("real server address %q: %w", opts[i], ErrSaveSyntax)
				}
				r.Addr, haveAddr = ap, true
				continue
			}
			w, err := strconv.ParseInt(opts[i], 10, 32)
			if err != nil || w < 0 {
				return r, fmt.Errorf("weight %q: %w", opts[i], ErrSaveSyntax)
			}
			r.Weight = int(w)
		default:
			return r, fmt.Errorf("real server option %q (only -r, -m, -w are known): %w", o, ErrSaveSyntax)
		}
	}
	if !haveAddr || !masq {
		return r, fmt.Errorf("real server without -r or not masquerading (-m): %w", ErrSaveSyntax)
	}
	return r, nil
}
