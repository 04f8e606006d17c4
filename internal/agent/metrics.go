package agent

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
)

// metrics are vnetd's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.HistogramVec
	allocFails   *prometheus.CounterVec
	refreshes    *prometheus.CounterVec
	refreshErrs  *prometheus.CounterVec
	repairs      *prometheus.CounterVec
	passes       *prometheus.CounterVec
	passErrors   prometheus.Counter
	stateWrites  prometheus.Counter
	agentVersion *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vnetd_cni_request_duration_seconds",
			Help:    "CNI commands served for the plugins, by plugin, command and result (ok, or the CNI error code).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10},
		}, []string{"plugin", "command", "result"}),
		allocFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnetd_allocation_failures_total",
			Help: "ADDs that failed, by CNI error code (11: no free address or the pool source is unavailable).",
		}, []string{"plugin", "code"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnetd_pool_refreshes_total",
			Help: "Background reads of a network's address pool from its source (wireserver, IMDS, file).",
		}, []string{"network"}),
		refreshErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnetd_pool_refresh_errors_total",
			Help: "Background pool reads that failed.",
		}, []string{"network"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnetd_reconcile_repairs_total",
			Help: "Kernel objects the reconciler put back, by kind.",
		}, []string{"kind"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vnetd_reconcile_passes_total",
			Help: "Reconcile passes, by what started them (event, periodic, start).",
		}, []string{"trigger"}),
		passErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vnetd_reconcile_errors_total",
			Help: "Reconcile passes of a network that failed.",
		}),
		stateWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vnetd_state_writes_total",
			Help: "Writes of the state file by the agent.",
		}),
		agentVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vnetd_build_info",
			Help: "vnetd's version (always 1).",
		}, []string{"version"}),
	}
	m.reg.MustRegister(m.requests, m.allocFails, m.refreshes, m.refreshErrs, m.repairs, m.passes, m.passErrors, m.stateWrites, m.agentVersion,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(req *agentapi.Request, resp *agentapi.Response, d time.Duration) {
	result := "ok"
	if resp.Error != nil {
		result = strconv.FormatUint(uint64(resp.Error.Code), 10)
		if req.Command == "ADD" {
			m.allocFails.WithLabelValues(req.Plugin, result).Inc()
		}
	}
	m.requests.WithLabelValues(req.Plugin, req.Command, result).Observe(d.Seconds())
}

// poolCollector reports each NIC's pool from the state file at scrape time.
type poolCollector struct {
	store *store.Store
	desc  *prometheus.Desc
}

func newPoolCollector(s *store.Store) *poolCollector {
	return &poolCollector{store: s, desc: prometheus.NewDesc("vnetd_pool_addresses",
		"Addresses of a NIC's pool (its secondary IP configurations), by state: total, used, free.", []string{"nic", "state"}, nil)}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.store.Read()
	if err != nil {
		return
	}
	for id, p := range st.Pools {
		used := ipam.InUse(st, p)
		free := len(ipam.Free(st, p))
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(len(p.Addresses)), id, "total")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(used), id, "used")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(free), id, "free")
	}
}
