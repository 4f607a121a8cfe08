package coordinator

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-go/baton/assignment"
)

// metrics is nil when no Registerer was given; every method is a no-op then.
//
// It is registered as one Collector, so that a coordinator made again for
// the same group and member in the same process (a restart after Leave)
// takes over the registered metrics instead of failing New with a
// duplicate registration; its counters then go on from where they were.
type metrics struct {
	leader         prometheus.Gauge
	members        prometheus.Gauge
	owned          prometheus.Gauge
	rebalances     prometheus.Counter
	rebalanceTime  prometheus.Histogram
	generation     prometheus.Gauge
	moves          prometheus.Counter
	handoffGap     prometheus.Histogram
	claimWait      prometheus.Histogram
	revokes        *prometheus.CounterVec
	revokeOverruns *prometheus.CounterVec
	invalidSpecs   prometheus.Gauge
	unassignable   prometheus.Gauge
	balancerErrors *prometheus.CounterVec
	etcdErrors     *prometheus.CounterVec
	callbackErrors *prometheus.CounterVec
	orphanKeys     prometheus.Counter
	prepares       *prometheus.CounterVec

	// deadline is the ownership deadline after the last lease renewal, in
	// Unix nanoseconds (0 before the first). The margin is computed at
	// scrape time, so it shrinks while renewals fail: that is what an alert
	// on it must see.
	deadline   atomic.Int64
	marginDesc *prometheus.Desc
}

// Label values that exist from the start, so a rate() over them works
// before the first event.
var (
	balancerErrorKinds = []string{"error", "panic", "timeout", "fallback", "invalid-plan"}
	callbackNames      = []string{"assign", "update", "revoke", "run", "prepare"}
	prepareOutcomes    = []string{"ready", "failed", "abandoned", "awaited", "timeout"}
)

func newMetrics(r prometheus.Registerer, group, member string) (*metrics, error) {
	if r == nil {
		return nil, nil
	}
	r = prometheus.WrapRegistererWith(prometheus.Labels{"group": group, "member": member}, r)
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		leader:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_leader", Help: "1 while this member is the group's leader, else 0."}),
		members:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_members", Help: "Live members seen by the leader (leader only; 0 on other members)."}),
		owned:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_syncs_owned", Help: "Syncs this member owns."}),
		rebalances:     prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_rebalances_total", Help: "Plans written by this member while leader."}),
		rebalanceTime:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_rebalance_duration_seconds", Help: "Time of one rebalance round that wrote a plan: balancer, validation and target writes.", Buckets: buckets}),
		generation:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_plan_generation", Help: "Generation of the last plan this member wrote as leader."}),
		moves:          prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_moves_total", Help: "Syncs whose target member the leader changed, first placements and syncs of departed members included."}),
		handoffGap:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_handoff_gap_seconds", Help: "For a sync this member waited for: from seeing the previous owner release it to claiming it.", Buckets: buckets}),
		claimWait:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_claim_wait_seconds", Help: "From a sync appearing in this member's target to this member claiming it.", Buckets: buckets}),
		revokes:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_revokes_total", Help: "OnRevoke calls by reason."}, []string{"reason"}),
		revokeOverruns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_revoke_overruns_total", Help: "OnRevoke calls that overran their budget (the revoke timeout, or the claim's deadline for lease-lost and shutdown), by reason."}, []string{"reason"}),
		invalidSpecs:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_invalid_specs", Help: "Stored sync specs that cannot be read (leader only; 0 on other members)."}),
		unassignable:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "baton_unassignable_syncs", Help: "Valid syncs the last plan left without a member (leader only; 0 on other members)."}),
		balancerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_balancer_errors_total", Help: "Balancer failures by kind: error, panic, timeout (the call overran its budget and was abandoned), fallback (a round planned by the built-in Sticky balancer because an abandoned call still runs), invalid-plan."}, []string{"kind"}),
		etcdErrors:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_etcd_request_errors_total", Help: "Failed etcd requests by operation."}, []string{"op"}),
		callbackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_callback_errors_total", Help: "Handler callbacks (and Runner functions) that returned an error or panicked."}, []string{"callback"}),
		orphanKeys:     prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_orphan_owner_keys_total", Help: "Owner keys found on this member's lease with no sync running (a claim applied although its answer was lost), each then adopted or released."}),
		prepares:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_prepares_total", Help: "Prepared handoffs by outcome. On the member a sync moves to: ready (OnPrepare returned, the owner was told), failed (OnPrepare returned an error or panicked; the owner was told, the move goes on cold), abandoned (the plan changed, the owner let go first, or the member is leaving or at risk). On the owner: awaited (it let go once the new member was ready), timeout (it let go after the prepare timeout)."}, []string{"outcome"}),
		marginDesc: prometheus.NewDesc("baton_lease_deadline_margin_seconds",
			"Time left until this member's ownership deadline (send time of the last lease renewal + TTL - 5%); shrinks while renewals fail, absent once the deadline has passed.", nil, nil),
	}
	for _, reason := range assignment.Reasons() {
		m.revokes.WithLabelValues(reason.String())
		m.revokeOverruns.WithLabelValues(reason.String())
	}
	for _, k := range balancerErrorKinds {
		m.balancerErrors.WithLabelValues(k)
	}
	for _, cb := range callbackNames {
		m.callbackErrors.WithLabelValues(cb)
	}
	for _, o := range prepareOutcomes {
		m.prepares.WithLabelValues(o)
	}
	if err := r.Register(m); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if old, ok := are.ExistingCollector.(*metrics); ok {
				return old, nil
			}
		}
		return nil, err
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.leader, m.members, m.owned, m.rebalances, m.rebalanceTime, m.generation, m.moves,
		m.handoffGap, m.claimWait, m.revokes, m.revokeOverruns, m.invalidSpecs, m.unassignable,
		m.balancerErrors, m.etcdErrors, m.callbackErrors, m.orphanKeys, m.prepares}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- m.marginDesc
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	// Past the deadline the member owns nothing on that lease: the margin
	// is no longer a margin of anything, so it is left out until the next
	// renewal.
	if d := m.deadline.Load(); d != 0 {
		if left := time.Until(time.Unix(0, d)); left > 0 {
			ch <- prometheus.MustNewConstMetric(m.marginDesc, prometheus.GaugeValue, left.Seconds())
		}
	}
}

func (m *metrics) setLeader(on bool) {
	if m == nil {
		return
	}
	if on {
		m.leader.Set(1)
		return
	}
	// The leader-only gauges would go stale on a former leader; a sum or
	// max over the group must count the current leader's view only.
	m.leader.Set(0)
	m.members.Set(0)
	m.invalidSpecs.Set(0)
	m.unassignable.Set(0)
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

// claimed records a claim: wait since the sync was targeted here, and the
// handoff gap when this member waited for a previous owner (negative: it
// did not).
func (m *metrics) claimed(wait, handoff time.Duration) {
	if m != nil {
		m.claimWait.Observe(wait.Seconds())
		if handoff >= 0 {
			m.handoffGap.Observe(handoff.Seconds())
		}
	}
}

// deadlineMargin records a renewal: the deadline is now d away.
func (m *metrics) deadlineMargin(d time.Duration) {
	if m != nil {
		m.deadline.Store(time.Now().Add(d).UnixNano())
	}
}

// sessionEnded stops reporting a deadline margin until the next session.
func (m *metrics) sessionEnded() {
	if m != nil {
		m.deadline.Store(0)
	}
}

func (m *metrics) revoked(why assignment.RevokeReason, overrun bool) {
	if m != nil {
		m.revokes.WithLabelValues(why.String()).Inc()
		if overrun {
			m.revokeOverruns.WithLabelValues(why.String()).Inc()
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

func (m *metrics) orphans(n int) {
	if m != nil {
		m.orphanKeys.Add(float64(n))
	}
}

func (m *metrics) prepared(outcome string) {
	if m != nil {
		m.prepares.WithLabelValues(outcome).Inc()
	}
}
