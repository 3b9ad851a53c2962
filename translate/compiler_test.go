package translate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/svcplan/svcplan/internal/randstate"
	"github.com/svcplan/svcplan/proxy"
)

// planTexts returns every plan text of p, in order.
func planTexts(p *Plan) []string {
	var out []string
	for _, ip := range p.IPTables {
		out = append(out, ip.String())
	}
	for _, np := range p.NFTables {
		out = append(out, np.String())
	}
	return out
}

// cloneState returns a deep copy of st.
func cloneState(st *proxy.State) *proxy.State {
	c := &proxy.State{Node: cloneNode(&st.Node), Config: cloneConfig(&st.Config)}
	cl := newCloner(st.Services)
	for i := range st.Services {
		c.Services = append(c.Services, cl.service(&st.Services[i]))
	}
	return c
}

// mutate changes st in one random way: mostly one endpoint of one
// service, sometimes a whole service, the service list, the node or the
// settings. The result may be invalid.
func mutate(r *rand.Rand, g *randstate.Gen, st *proxy.State) string {
	if len(st.Services) == 0 {
		st.Services = append(st.Services, g.State().Services[0])
		return "add a service"
	}
	svc := &st.Services[r.IntN(len(st.Services))]
	switch op := r.IntN(20); {
	case op < 8 && len(svc.Endpoints) > 0:
		e := &svc.Endpoints[r.IntN(len(svc.Endpoints))]
		switch r.IntN(4) {
		case 0:
			e.Ready = !e.Ready
		case 1:
			e.Terminating, e.Serving = !e.Terminating, !e.Serving
		case 2:
			e.NodeName = []string{"node-a", "node-b", ""}[r.IntN(3)]
		default:
			if len(e.Ports) > 0 {
				e.Ports[0].Port = 8000 + r.IntN(4)
			}
		}
		return "change an endpoint of " + svc.Name
	case op < 10:
		svc.Endpoints = append(svc.Endpoints, proxy.Endpoint{
			Addr: netip.AddrFrom4([4]byte{10, 244, byte(1 + r.IntN(2)), byte(100 + r.IntN(100))}), Ready: true,
			NodeName: "node-a", Ports: []proxy.EndpointPort{{Name: svc.Ports[0].Name, Port: 8080}},
		})
		return "add an endpoint to " + svc.Name
	case op < 12 && len(svc.Endpoints) > 0:
		k := r.IntN(len(svc.Endpoints))
		svc.Endpoints = slices.Delete(svc.Endpoints, k, k+1)
		return "remove an endpoint of " + svc.Name
	case op == 12:
		svc.SessionAffinity = proxy.SessionAffinityClientIP
		return "affinity for " + svc.Name
	case op == 13:
		fresh := g.State().Services[0]
		fresh.Namespace, fresh.Name = svc.Namespace, svc.Name
		*svc = fresh
		return "replace " + svc.Name
	case op == 14:
		k := r.IntN(len(st.Services))
		st.Services = slices.Delete(st.Services, k, k+1)
		return "remove a service"
	case op == 15:
		more := g.State().Services
		s := more[r.IntN(len(more))]
		s.Name = fmt.Sprintf("new%d", r.IntN(1000))
		st.Services = append(st.Services, s)
		return "add a service (maybe clashing)"
	case op == 16:
		r.Shuffle(len(st.Services), func(i, j int) { st.Services[i], st.Services[j] = st.Services[j], st.Services[i] })
		return "reorder the services"
	case op == 17:
		st.Config.MasqueradeAll = !st.Config.MasqueradeAll
		return "flip masqueradeAll"
	case op == 18:
		st.Node.Zone = []string{"", "zone-a", "zone-b"}[r.IntN(3)]
		return "change the node's zone"
	default:
		svc.ClusterIPs = append(svc.ClusterIPs[:0:0], svc.ClusterIPs[:1]...)
		return "drop IPv6 from " + svc.Name
	}
}

// TestCompilerMatchesCompile is the Compiler's contract: over random
// sequences of states, each a small change of the one before, its plans
// are byte-identical to Compile's, and its errors the same.
func TestCompilerMatchesCompile(t *testing.T) {
	seqs, steps := 120, 30
	if testing.Short() {
		seqs = 20
	}
	for _, mode := range []Mode{ModeIPTables, ModeNFTables} {
		for _, opts := range [][]Option{nil, {WithLargeClusterThreshold(6)}} {
			incrementals, compiles := 0, 0
			for s := range seqs {
				seed := *propSeed + uint64(s)
				g := randstate.New(seed)
				r := rand.New(rand.NewPCG(seed, 7))
				c := NewCompiler(mode, opts...)
				st := g.State()
				for step := range steps {
					what := "start"
					if step > 0 {
						next := cloneState(st)
						what = mutate(r, g, next)
						// The Compiler keeps copies: changing the state it
						// saw last must not matter.
						if len(st.Services) > 0 {
							st.Services[0].Name = "changed-behind-its-back"
						}
						st = next
					}
					got, gotErr := c.Compile(st)
					want, wantErr := Compile(st, mode, opts...)
					compiles++
					if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
						t.Fatalf("%s seed %d step %d (%s): Compiler.Compile() error = %v, want %v", mode, seed, step, what, gotErr, wantErr)
					}
					if wantErr != nil {
						continue
					}
					if diff := cmp.Diff(planTexts(want), planTexts(got)); diff != "" {
						t.Fatalf("%s seed %d step %d (%s): Compiler.Compile() plan differs from Compile (-want +got):\n%s", mode, seed, step, what, diff)
					}
				}
				incrementals += c.incrementals
			}
			t.Logf("%s %d options: %d of %d compiles incremental", mode, len(opts), incrementals, compiles)
			if incrementals < compiles/4 {
				t.Errorf("%s: only %d of %d compiles were incremental", mode, incrementals, compiles)
			}
		}
	}
}

// TestCompilerLargeState checks the Compiler against Compile on the
// benchmark's state after one-endpoint changes, which splice long runs
// of unchanged chains.
func TestCompilerLargeState(t *testing.T) {
	for _, mode := range []Mode{ModeIPTables, ModeNFTables} {
		st := benchState(300, 4)
		c := NewCompiler(mode, WithParallelism(3))
		r := rand.New(rand.NewPCG(1, 2))
		for step := range 12 {
			if step > 0 {
				st = cloneState(st)
				svc := &st.Services[r.IntN(len(st.Services))]
				e := &svc.Endpoints[r.IntN(len(svc.Endpoints))]
				e.Ready = !e.Ready
				if step%4 == 0 {
					svc.Endpoints = svc.Endpoints[1:]
				}
			}
			got, err := c.Compile(st)
			if err != nil {
				t.Fatalf("%s step %d: Compiler.Compile() error = %v", mode, step, err)
			}
			want, err := Compile(st, mode)
			if err != nil {
				t.Fatalf("%s step %d: Compile() error = %v", mode, step, err)
			}
			if diff := cmp.Diff(planTexts(want), planTexts(got)); diff != "" {
				t.Fatalf("%s step %d: plan differs (-want +got):\n%s", mode, step, diff)
			}
		}
		if c.incrementals != 11 {
			t.Errorf("%s: %d of 11 changes compiled incrementally", mode, c.incrementals)
		}
	}
}

// TestCompilerEarlierPlansUnchanged checks that plans stay as they were
// returned when later compiles splice from them.
func TestCompilerEarlierPlansUnchanged(t *testing.T) {
	for _, mode := range []Mode{ModeIPTables, ModeNFTables} {
		st := benchState(50, 3)
		c := NewCompiler(mode)
		first, err := c.Compile(st)
		if err != nil {
			t.Fatal(err)
		}
		text := planTexts(first)
		for i := range 5 {
			st = cloneState(st)
			st.Services[i*7].Endpoints[0].Ready = false
			if _, err := c.Compile(st); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff(text, planTexts(first)); diff != "" {
			t.Errorf("%s: first plan changed by later compiles (-before +after):\n%s", mode, diff)
		}
	}
}

// TestServiceEqualSeesEveryField guards serviceEqual, nodeEqual and
// configEqual against fields added to the model later: changing any one
// field must make them report a difference.
func TestServiceEqualSeesEveryField(t *testing.T) {
	base := func() proxy.Service {
		return benchState(1, 1).Services[0]
	}
	for i := range reflect.TypeFor[proxy.Service]().NumField() {
		a, b := base(), base()
		name := reflect.TypeFor[proxy.Service]().Field(i).Name
		change(t, reflect.ValueOf(&b).Elem().Field(i))
		if serviceEqual(&a, &b) {
			t.Errorf("serviceEqual() = true after changing Service.%s", name)
		}
	}
	for i := range reflect.TypeFor[proxy.Endpoint]().NumField() {
		a, b := base(), base()
		name := reflect.TypeFor[proxy.Endpoint]().Field(i).Name
		change(t, reflect.ValueOf(&b.Endpoints[0]).Elem().Field(i))
		if serviceEqual(&a, &b) {
			t.Errorf("serviceEqual() = true after changing Endpoint.%s", name)
		}
	}
	for i := range reflect.TypeFor[proxy.Node]().NumField() {
		a, b := benchState(1, 1).Node, benchState(1, 1).Node
		change(t, reflect.ValueOf(&b).Elem().Field(i))
		if nodeEqual(&a, &b) {
			t.Errorf("nodeEqual() = true after changing Node.%s", reflect.TypeFor[proxy.Node]().Field(i).Name)
		}
	}
	for i := range reflect.TypeFor[proxy.Config]().NumField() {
		a, b := benchState(1, 1).Config, benchState(1, 1).Config
		change(t, reflect.ValueOf(&b).Elem().Field(i))
		if configEqual(&a, &b) {
			t.Errorf("configEqual() = true after changing Config.%s", reflect.TypeFor[proxy.Config]().Field(i).Name)
		}
	}
}

// change sets v to a different value.
func change(t *testing.T, v reflect.Value) {
	t.Helper()
	if a, ok := v.Interface().(netip.Addr); ok {
		v.Set(reflect.ValueOf(netip.AddrFrom4([4]byte{192, 0, 2, 1})))
		if a == v.Interface().(netip.Addr) {
			v.Set(reflect.ValueOf(netip.AddrFrom4([4]byte{192, 0, 2, 2})))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int:
		v.SetInt(v.Int() + 1)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Slice:
		if v.Len() > 0 && v.Index(0).Kind() == reflect.Struct && v.Index(0).NumField() > 0 && v.Index(0).Field(0).CanSet() {
			change(t, v.Index(0).Field(0))
			return
		}
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	case reflect.Pointer:
		n := reflect.New(v.Type().Elem())
		if !v.IsNil() {
			n.Elem().Set(v.Elem())
		}
		change(t, n.Elem())
		v.Set(n)
	case reflect.Struct:
		change(t, v.Field(0))
	default:
		t.Fatalf("change: kind %s not handled", v.Kind())
	}
}
