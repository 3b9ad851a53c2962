package proxier

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/svcplan/svcplan/iptables"
	"github.com/svcplan/svcplan/ipvs"
	"github.com/svcplan/svcplan/nftables"
	"github.com/svcplan/svcplan/proxy"
	"github.com/svcplan/svcplan/translate"
)

// metrics are the proxier's Prometheus metrics, named as kube-proxy
// names them where it has the same measure.
type metrics struct {
	syncDuration, fullDuration, partialDuration *prometheus.HistogramVec
	lastSync, lastQueued                        *prometheus.GaugeVec
	iptablesRules                               *prometheus.GaugeVec
	iptablesFailures, iptablesPartialFailures   *prometheus.CounterVec
	nftablesFailures, nftablesCleanupFailures   *prometheus.CounterVec
	nftablesObjects                             *prometheus.GaugeVec
	ipsetEntries, ipvsObjects                   *prometheus.GaugeVec
	ipvsDraining                                prometheus.Gauge
	ipvsFailures                                *prometheus.CounterVec
	endpointPending, servicePending             prometheus.Gauge
	endpointTotal, serviceTotal                 prometheus.Counter
	noLocal                                     *prometheus.GaugeVec
	conntrackDeleted                            *prometheus.CounterVec
	conntrackDuration                           *prometheus.HistogramVec
	healthz, livez                              *prometheus.CounterVec
	syncFailures                                *prometheus.CounterVec
	driftRepairs                                prometheus.Counter
}

// syncBuckets are kube-proxy's buckets for sync durations: 1 ms to 16 s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: name, Help: help, Buckets: syncBuckets}, []string{"ip_family"})
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kubeproxy", Name: name, Help: help}, labels)
	}
	m := &metrics{
		syncDuration:            hist("sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds"),
		fullDuration:            hist("sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs"),
		partialDuration:         hist("sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs"),
		lastSync:                gauge("sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", "ip_family"),
		lastQueued:              gauge("sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued", "ip_family"),
		iptablesRules:           gauge("sync_proxy_rules_iptables_total", "Total number of iptables rules owned by kube-proxy", "ip_family", "table"),
		iptablesFailures:        counter("sync_proxy_rules_iptables_restore_failures_total", "Cumulative proxy iptables restore failures", "ip_family"),
		iptablesPartialFailures: counter("sync_proxy_rules_iptables_partial_restore_failures_total", "Cumulative proxy iptables partial restore failures", "ip_family"),
		nftablesFailures:        counter("sync_proxy_rules_nftables_sync_failures_total", "Cumulative proxy nftables sync failures", "ip_family"),
		nftablesCleanupFailures: counter("sync_proxy_rules_nftables_cleanup_failures_total", "Cumulative proxy nftables cleanup failures", "ip_family"),
		nftablesObjects: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "nftables_objects",
			Help: "Number of objects in the nftables table applied last, by kind: chains, rules, sets, elements"}, []string{"ip_family", "kind"}),
		ipsetEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "ipset_entries",
			Help: "Number of members of each ipset applied last (IPVS mode)"}, []string{"set"}),
		ipvsObjects: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "ipvs_objects",
			Help: "Number of IPVS objects applied last, by kind: virtual_servers, real_servers, addresses (bound to kube-ipvs0)"}, []string{"ip_family", "kind"}),
		ipvsDraining: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "ipvs_draining_real_servers",
			Help: "Real servers removed from the plan that keep weight 0 until their connections end (IPVS mode)"}),
		ipvsFailures:     counter("sync_proxy_rules_ipvs_sync_failures_total", "Cumulative proxy ipset and IPVS apply failures, by backend: ipset, ipvs", "backend"),
		endpointPending:  prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_pending", Help: "Pending proxy rules Endpoint changes"}),
		servicePending:   prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_service_changes_pending", Help: "Pending proxy rules Service changes"}),
		endpointTotal:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_total", Help: "Cumulative proxy rules Endpoint changes"}),
		serviceTotal:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_service_changes_total", Help: "Cumulative proxy rules Service changes"}),
		noLocal:          gauge("sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints", "ip_family", "traffic_policy"),
		conntrackDeleted: counter("conntrack_reconciler_deleted_entries_total", "Cumulative conntrack flows deleted by conntrack reconciler", "ip_family"),
		conntrackDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: "conntrack_reconciler_sync_duration_seconds",
			Help: "ReconcileConntrackFlowsLatency latency in seconds", Buckets: syncBuckets}, []string{"ip_family"}),
		healthz: counter("proxy_healthz_total", "Cumulative proxy healthz HTTP status", "code"),
		livez:   counter("proxy_livez_total", "Cumulative proxy livez HTTP status", "code"),
		syncFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "sync_failures_total",
			Help: "Syncs that failed, by stage: compile or apply"}, []string{"stage"}),
		driftRepairs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "svcplan", Subsystem: "proxier", Name: "drift_repairs_total",
			Help: "Syncs whose appliers found owned objects changed behind their back and repaired them"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.syncDuration, m.fullDuration, m.partialDuration, m.lastSync, m.lastQueued,
		m.iptablesRules, m.iptablesFailures, m.iptablesPartialFailures,
		m.nftablesFailures, m.nftablesCleanupFailures, m.nftablesObjects,
		m.ipsetEntries, m.ipvsObjects, m.ipvsDraining, m.ipvsFailures,
		m.endpointPending, m.servicePending, m.endpointTotal, m.serviceTotal,
		m.noLocal, m.conntrackDeleted, m.conntrackDuration, m.healthz, m.livez,
		m.syncFailures, m.driftRepairs,
	}
}

// planFamilies returns the ip_family labels of the families plan covers.
func planFamilies(plan *translate.Plan) []string {
	v4, v6 := false, false
	for _, p := range plan.IPTables {
		v4 = v4 || p.FamilyOrDefault() != iptables.IPv6
		v6 = v6 || p.FamilyOrDefault() == iptables.IPv6
	}
	for _, p := range plan.NFTables {
		v4 = v4 || p.FamilyOrDefault() != nftables.IPv6
		v6 = v6 || p.FamilyOrDefault() == nftables.IPv6
	}
	var out []string
	if v4 || !v6 {
		out = append(out, familyLabel(false))
	}
	if v6 {
		out = append(out, familyLabel(true))
	}
	return out
}

// observePlan sets the gauges that describe the plan applied.
func (m *metrics) observePlan(plan *translate.Plan) {
	m.iptablesRules.Reset()
	for _, p := range plan.IPTables {
		fam := familyLabel(p.FamilyOrDefault() == iptables.IPv6)
		for _, ts := range p.Stats() {
			m.iptablesRules.WithLabelValues(fam, string(ts.Table)).Set(float64(ts.Rules))
		}
	}
	m.nftablesObjects.Reset()
	for _, p := range plan.NFTables {
		fam := familyLabel(p.FamilyOrDefault() == nftables.IPv6)
		rules, elems := 0, 0
		for i := range p.Chains {
			rules += p.Chains[i].RuleCount()
		}
		for i := range p.Sets {
			elems += len(p.Sets[i].Elements)
		}
		m.nftablesObjects.WithLabelValues(fam, "chains").Set(float64(len(p.Chains)))
		m.nftablesObjects.WithLabelValues(fam, "rules").Set(float64(rules))
		m.nftablesObjects.WithLabelValues(fam, "sets").Set(float64(len(p.Sets)))
		m.nftablesObjects.WithLabelValues(fam, "elements").Set(float64(elems))
	}
	m.ipsetEntries.Reset()
	if plan.IPSets != nil {
		for i := range plan.IPSets.Sets {
			m.ipsetEntries.WithLabelValues(plan.IPSets.Sets[i].Name).Set(float64(len(plan.IPSets.Sets[i].Entries)))
		}
	}
	m.ipvsObjects.Reset()
	if plan.IPVS != nil {
		m.observeIPVS(plan.IPVS)
	}
}

// observeIPVS sets the IPVS object gauges of p, per family.
func (m *metrics) observeIPVS(p *ipvs.Plan) {
	var vs, rs, addrs [2]int
	for i := range p.VirtualServers {
		v := &p.VirtualServers[i]
		f := 0
		if v.Addr.Addr().Is6() {
			f = 1
		}
		vs[f]++
		rs[f] += len(v.RealServers)
	}
	for _, a := range p.Addresses {
		if a.Is6() {
			addrs[1]++
		} else {
			addrs[0]++
		}
	}
	for f := range 2 {
		fam := familyLabel(f == 1)
		m.ipvsObjects.WithLabelValues(fam, "virtual_servers").Set(float64(vs[f]))
		m.ipvsObjects.WithLabelValues(fam, "real_servers").Set(float64(rs[f]))
		m.ipvsObjects.WithLabelValues(fam, "addresses").Set(float64(addrs[f]))
	}
}

// observeNoLocal sets the number of service ports under a Local traffic
// policy with endpoints elsewhere but none on this node, per family and
// policy ("internal", "external"), as kube-proxy counts them.
func (m *metrics) observeNoLocal(st *proxy.State) {
	for _, ipv6 := range []bool{false, true} {
		internal, external := 0, 0
		for i := range st.Services {
			svc := &st.Services[i]
			if !hasFamily(svc.ClusterIPs, ipv6) {
				continue
			}
			for j := range svc.Ports {
				port := &svc.Ports[j]
				local := svc.InternalLocal() || svc.ExternalLocal()
				if !local {
					continue
				}
				pe := proxy.SelectEndpoints(st, svc, port, ipv6)
				if !pe.HasAny || len(pe.Local) > 0 {
					continue
				}
				if svc.InternalLocal() {
					internal++
				}
				if svc.ExternalLocal() {
					external++
				}
			}
		}
		fam := familyLabel(ipv6)
		m.noLocal.WithLabelValues(fam, "internal").Set(float64(internal))
		m.noLocal.WithLabelValues(fam, "external").Set(float64(external))
	}
}
