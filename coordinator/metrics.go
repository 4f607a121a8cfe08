package coordinator

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-go/baton/assignment"
)

// metrics is nil when no Registerer was given; every method is a no-op then.
type metrics struct {
	leader          prometheus.Gauge
	members         prometheus.Gauge
	owned           prometheus.Gauge
	rebalances      prometheus.Counter
	rebalanceTime   prometheus.Histogram
	generation      prometheus.Gauge
	moves           prometheus.Counter
	handoffGap      prometheus.Histogram
	claimWait       prometheus.Histogram
	deadlineMarginS prometheus.Gauge
	revokes         *prometheus.CounterVec
	revokeOverruns  prometheus.Counter
	invalidSpecs    prometheus.Gauge
	unassignable    prometheus.Gauge
	balancerErrors  *prometheus.CounterVec
	etcdErrors      *prometheus.CounterVec
	callbackErrors  *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer, group, member string) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	r = prometheus.WrapRegistererWith(prometheus.Labels{"group": group, "member": member}, r)
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		leader:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_leader", Help: "1 while this member is the group's leader."}),
		members:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_members", Help: "Live members seen by the leader (leader only)."}),
		owned:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_syncs_owned", Help: "Syncs this member owns."}),
		rebalances:      prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_rebalances_total", Help: "Rebalance rounds run by the leader."}),
		rebalanceTime:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_rebalance_duration_seconds", Help: "Time of one rebalance round, balancer and writes.", Buckets: buckets}),
		generation:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_plan_generation", Help: "Generation of the last plan written by the leader."}),
		moves:           prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_moves_total", Help: "Syncs whose target member the leader changed."}),
		handoffGap:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_claim_handoff_seconds", Help: "From the previous owner's release to this member's claim.", Buckets: buckets}),
		claimWait:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_claim_wait_seconds", Help: "From a sync appearing in this member's target to its claim.", Buckets: buckets}),
		deadlineMarginS: prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_lease_deadline_margin_seconds", Help: "Time left until the local ownership deadline, after the last renewal."}),
		revokes:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_revokes_total", Help: "Revokes by reason."}, []string{"reason"}),
		revokeOverruns:  prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_revoke_overruns_total", Help: "OnRevoke calls that took longer than the revoke timeout."}),
		invalidSpecs:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_invalid_specs", Help: "Stored sync specs that cannot be read (leader only)."}),
		unassignable:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_unassignable_syncs", Help: "Valid syncs that no live member may run (leader only)."}),
		balancerErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_balancer_errors_total", Help: "Balancer errors, panics, timeouts and invalid plans."}, []string{"kind"}),
		etcdErrors:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_etcd_errors_total", Help: "Failed etcd requests by operation."}, []string{"op"}),
		callbackErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_callback_errors_total", Help: "Handler callbacks that returned an error or panicked."}, []string{"callback"}),
	}
	for _, reason := range assignment.Reasons() {
		m.revokes.WithLabelValues(reason.String())
	}
	cs := []prometheus.Collector{m.leader, m.members, m.owned, m.rebalances, m.rebalanceTime, m.generation, m.moves,
		m.handoffGap, m.claimWait, m.deadlineMarginS, m.revokes, m.revokeOverruns, m.invalidSpecs, m.unassignable,
		m.balancerErrors, m.etcdErrors, m.callbackErrors}
	var errs []error
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) setLeader(on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.leader.Set(v)
	}
}
func (m *metrics) setOwned(n int) {
	if m != nil {
		m.owned.Set(float64(n))
	}
}
func (m *metrics) rebalance(d time.Duration, gen int64, moves int) {
	if m != nil {
		m.rebalances.Inc()
		m.rebalanceTime.Observe(d.Seconds())
		m.generation.Set(float64(gen))
		m.moves.Add(float64(moves))
	}
}
func (m *metrics) leaderView(members, invalid, unassignable int) {
	if m != nil {
		m.members.Set(float64(members))
		m.invalidSpecs.Set(float64(invalid))
		m.unassignable.Set(float64(unassignable))
	}
}
func (m *metrics) claimed(wait, handoff time.Duration) {
	if m != nil {
		m.claimWait.Observe(wait.Seconds())
		if handoff >= 0 {
			m.handoffGap.Observe(handoff.Seconds())
		}
	}
}
func (m *metrics) deadlineMargin(d time.Duration) {
	if m != nil {
		m.deadlineMarginS.Set(d.Seconds())
	}
}
func (m *metrics) revoked(why assignment.RevokeReason, overrun bool) {
	if m != nil {
		m.revokes.WithLabelValues(why.String()).Inc()
		if overrun {
			m.revokeOverruns.Inc()
		}
	}
}
func (m *metrics) balancerError(kind string) {
	if m != nil {
		m.balancerErrors.WithLabelValues(kind).Inc()
	}
}
func (m *metrics) etcdError(op string) {
	if m != nil {
		m.etcdErrors.WithLabelValues(op).Inc()
	}
}
func (m *metrics) callbackError(cb string) {
	if m != nil {
		m.callbackErrors.WithLabelValues(cb).Inc()
	}
}
