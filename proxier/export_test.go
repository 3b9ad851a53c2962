package proxier

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestMetrics gives the tests the proxier's collectors.
type TestMetrics struct{ m *metrics }

// MetricsForTest returns p's metrics.
func (p *Proxier) MetricsForTest() TestMetrics { return TestMetrics{p.metrics} }

func (t TestMetrics) SyncCount(fam string) prometheus.Collector {
	return countOf{t.m.syncDuration, fam}
}
func (t TestMetrics) FullCount(fam string) prometheus.Collector {
	return countOf{t.m.fullDuration, fam}
}
func (t TestMetrics) PartialCount(fam string) prometheus.Collector {
	return countOf{t.m.partialDuration, fam}
}
func (t TestMetrics) IPTablesRules(fam, table string) prometheus.Collector {
	return t.m.iptablesRules.WithLabelValues(fam, table)
}
func (t TestMetrics) Failures(stage string) prometheus.Collector {
	return t.m.syncFailures.WithLabelValues(stage)
}
func (t TestMetrics) RestoreFailures(fam string) prometheus.Collector {
	return t.m.iptablesFailures.WithLabelValues(fam)
}
func (t TestMetrics) Healthz(code string) prometheus.Collector {
	return t.m.healthz.WithLabelValues(code)
}
func (t TestMetrics) ServicePending() prometheus.Collector  { return t.m.servicePending }
func (t TestMetrics) EndpointPending() prometheus.Collector { return t.m.endpointPending }
func (t TestMetrics) ServiceTotal() prometheus.Collector    { return t.m.serviceTotal }
func (t TestMetrics) EndpointTotal() prometheus.Collector   { return t.m.endpointTotal }
func (t TestMetrics) NoLocal(fam, policy string) prometheus.Collector {
	return t.m.noLocal.WithLabelValues(fam, policy)
}
func (t TestMetrics) ConntrackDeleted(fam string) prometheus.Collector {
	return t.m.conntrackDeleted.WithLabelValues(fam)
}
func (t TestMetrics) DriftRepairs() prometheus.Collector { return t.m.driftRepairs }
func (t TestMetrics) IPSetEntries(set string) prometheus.Collector {
	return t.m.ipsetEntries.WithLabelValues(set)
}
func (t TestMetrics) IPVSObjects(fam, kind string) prometheus.Collector {
	return t.m.ipvsObjects.WithLabelValues(fam, kind)
}
func (t TestMetrics) IPVSDraining() prometheus.Collector { return t.m.ipvsDraining }
func (t TestMetrics) IPVSFailures(backend string) prometheus.Collector {
	return t.m.ipvsFailures.WithLabelValues(backend)
}

// countOf is a histogram's sample count as a gauge, for testutil.ToFloat64.
type countOf struct {
	h   *prometheus.HistogramVec
	fam string
}

func (c countOf) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c countOf) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("count", "sample count", nil, nil), prometheus.GaugeValue, float64(c.count()))
}

func (c countOf) count() uint64 {
	m := make(chan prometheus.Metric, 1)
	c.h.WithLabelValues(c.fam).(prometheus.Histogram).Collect(m)
	var pb dto.Metric
	_ = (<-m).Write(&pb)
	return pb.GetHistogram().GetSampleCount()
}

// ErrNotGiven is errNotGiven, for the external tests.
var ErrNotGiven = errNotGiven
