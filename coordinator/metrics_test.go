package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// scrape is one Gather of a registry, indexed by metric name.
type scrape map[string]*dto.MetricFamily

func gather(t *testing.T, g prometheus.Gatherer) scrape {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := scrape{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value is a sample's value: a counter's or gauge's value, a histogram's
// sample count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return math.NaN()
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// sum adds up the samples of name whose labels include want.
func (s scrape) sum(name string, want map[string]string) float64 {
	total := 0.0
	for _, m := range s[name].GetMetric() {
		l := labelsOf(m)
		match := true
		for k, v := range want {
			if l[k] != v {
				match = false
			}
		}
		if match {
			total += value(m)
		}
	}
	return total
}

func (s scrape) of(name, member string) float64 {
	return s.sum(name, map[string]string{"member": member})
}

// labelValues lists the values label takes among name's samples.
func (s scrape) labelValues(name, label string) []string {
	var out []string
	for _, m := range s[name].GetMetric() {
		if v, ok := labelsOf(m)[label]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsThroughRebalance runs two members, lets a third join, and
// checks every metric a dashboard of the group would show.
func TestMetricsThroughRebalance(t *testing.T) {
	w := newWorld(t, nil)
	reg := prometheus.NewRegistry()
	ids := syncIDs(6)
	w.putSyncs(ids...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A spec written by hand that no SyncStore would accept.
	_, err := w.admin.Put(ctx, "/baton/"+w.group+"/syncs/broken", "{not json")
	require.NoError(t, err)

	// The group's first Balance call fails, once.
	var calls atomic.Int64
	balancer := func() rebalance.Balancer {
		sticky := rebalance.Sticky()
		return rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
			if calls.Add(1) == 1 {
				return nil, errors.New("first round fails on purpose")
			}
			return sticky.Balance(ctx, in)
		})
	}
	// Handing a sync over takes longer than the revoke timeout: each such
	// revoke is an overrun.
	const revokeTimeout = 100 * time.Millisecond
	slow := func(id string) coordinator.Handler {
		h := w.handler(id)
		return coordinator.HandlerFuncs{Assign: h.Assign, Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			if why == assignment.Rebalanced {
				select {
				case <-time.After(revokeTimeout + 50*time.Millisecond): // the work takes this long to stop
				case <-ctx.Done():
				}
			}
			h.Revoke(ctx, c, why)
		}}
	}
	opts := func() []coordinator.Option {
		return []coordinator.Option{coordinator.WithMetrics(reg), coordinator.WithBalancer(balancer()), coordinator.WithRevokeTimeout(revokeTimeout)}
	}
	w.join("m1", nil, slow("m1"), opts()...)
	w.join("m2", nil, slow("m2"), opts()...)
	w.settle(ids, "m1", "m2")
	before := gather(t, reg)
	rebalanced := map[string]string{"reason": "rebalanced"}
	movesBefore := before.sum("baton_moves_total", nil)
	revokesBefore := before.sum("baton_revokes_total", rebalanced)
	overrunsBefore := before.sum("baton_revoke_overruns_total", rebalanced)

	w.join("m3", nil, slow("m3"), opts()...)
	w.settle(ids, "m1", "m2", "m3")
	st := describe(t, w)
	require.NotEmpty(t, st.Leader)
	require.Len(t, st.Invalid, 1)

	// Gauges follow the group a moment after it settles: poll.
	var s scrape
	var problems []string
	ok := etcdtest.WaitUntil(10*time.Second, func() bool {
		s = gather(t, reg)
		problems = nil
		check := func(cond bool, format string, args ...any) {
			if !cond {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
		check(s.sum("baton_leader", nil) == 1 && s.of("baton_leader", st.Leader) == 1, "exactly the leader %s has baton_leader 1", st.Leader)
		check(s.of("baton_members", st.Leader) == 3 && s.sum("baton_members", nil) == 3, "leader sees 3 members, others report 0")
		for _, m := range []string{"m1", "m2", "m3"} {
			check(s.of("baton_syncs_owned", m) == 2, "%s owns 2", m)
			margin := s["baton_lease_deadline_margin_seconds"]
			found := false
			for _, sm := range margin.GetMetric() {
				if labelsOf(sm)["member"] == m {
					found = true
					check(sm.GetGauge().GetValue() > 0 && sm.GetGauge().GetValue() <= testTTL.Seconds(), "%s lease margin %v in (0, TTL]", m, sm.GetGauge().GetValue())
				}
			}
			check(found, "%s reports a lease margin", m)
		}
		check(s.of("baton_invalid_specs", st.Leader) == 1, "leader counts 1 invalid spec")
		check(s.sum("baton_unassignable_syncs", nil) == 0, "nothing unassignable")
		check(s.sum("baton_moves_total", nil)-movesBefore == 2, "the joiner took 2 syncs: %v moves", s.sum("baton_moves_total", nil)-movesBefore)
		check(s.of("baton_handoff_gap_seconds", "m3") >= 1, "the joiner measured its handoffs")
		check(s.of("baton_claim_wait_seconds", "m3") >= 2, "the joiner measured its claim waits")
		check(s.sum("baton_revokes_total", rebalanced)-revokesBefore == 2, "2 rebalanced revokes")
		check(s.sum("baton_revoke_overruns_total", rebalanced)-overrunsBefore == 2, "2 overruns")
		check(s.sum("baton_balancer_errors_total", map[string]string{"kind": "error"}) == 1, "1 balancer error")
		return len(problems) == 0
	})
	require.True(t, ok, "metrics after the join: %v", problems)

	// Counters and histograms that belong to the leader agree with each
	// other and with Describe.
	rebalances := s.of("baton_rebalances_total", st.Leader)
	require.GreaterOrEqual(t, rebalances, 1.0)
	require.GreaterOrEqual(t, s.sum("baton_rebalances_total", nil), 2.0, "a plan for two members, then one for three")
	require.Equal(t, rebalances, s.of("baton_rebalance_duration_seconds", st.Leader), "one duration per rebalance")
	require.Equal(t, float64(st.Generation), s.of("baton_plan_generation", st.Leader))
	for _, m := range s["baton_handoff_gap_seconds"].GetMetric() {
		if labelsOf(m)["member"] == "m3" {
			require.Positive(t, m.GetHistogram().GetSampleSum(), "gaps take time")
		}
	}

	// Names and labels: every family carries group and member, counters
	// end in _total, and labelled families exist with all their values
	// before any event.
	for name, mf := range s {
		for _, m := range mf.GetMetric() {
			l := labelsOf(m)
			require.Equal(t, w.group, l["group"], name)
			require.Contains(t, []string{"m1", "m2", "m3"}, l["member"], name)
		}
		if mf.GetType() == dto.MetricType_COUNTER {
			require.Regexp(t, `^baton_.*_total$`, name)
		} else {
			require.Regexp(t, `^baton_`, name)
		}
	}
	var reasons []string
	for _, r := range assignment.Reasons() {
		reasons = append(reasons, r.String())
	}
	slices.Sort(reasons)
	require.Equal(t, reasons, s.labelValues("baton_revokes_total", "reason"))
	require.Equal(t, reasons, s.labelValues("baton_revoke_overruns_total", "reason"))
	require.Equal(t, []string{"error", "fallback", "invalid-plan", "panic", "timeout"}, s.labelValues("baton_balancer_errors_total", "kind"))
	require.Equal(t, []string{"assign", "prepare", "revoke", "run", "update"}, s.labelValues("baton_callback_errors_total", "callback"))
	require.Equal(t, []string{"abandoned", "awaited", "failed", "ready", "timeout"}, s.labelValues("baton_prepares_total", "outcome"))

	// A member that left and is made again in the same process, with the
	// same registry, takes its metrics over instead of failing New.
	require.NoError(t, w.members["m3"].co.Leave(ctx))
	w.settle(ids, "m1", "m2")
	w.join("m3", nil, slow("m3"), opts()...)
	w.settle(ids, "m1", "m2", "m3")
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool { return gather(t, reg).of("baton_syncs_owned", "m3") == 2 }))

	// A crash revokes with Shutdown, counted by reason.
	victim := "m1"
	if st.Leader == victim {
		victim = "m2"
	}
	w.crash(victim)
	s = gather(t, reg)
	require.Positive(t, s.sum("baton_revokes_total", map[string]string{"member": victim, "reason": "shutdown"}))
	require.Zero(t, s.of("baton_syncs_owned", victim))
}

// TestMetricsLeaseLoss cuts a member off from etcd: its failed renewals
// are counted as etcd request errors, its syncs revoked with lease-lost,
// and its margin shrinks before it disappears.
func TestMetricsLeaseLoss(t *testing.T) {
	w := newWorld(t, nil)
	reg := prometheus.NewRegistry()
	ids := syncIDs(2)
	w.putSyncs(ids...)
	w.join("cut", w.cluster.ClientTo(t, 0), nil, coordinator.WithMetrics(reg))
	w.waitOwned(ids, 10*time.Second, "cut")
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		return len(gather(t, reg)["baton_lease_deadline_margin_seconds"].GetMetric()) == 1
	}), "margin reported after the first renewal")

	w.cluster.Blackhole(0)
	var s scrape
	// A revoke is counted when OnRevoke returns, just before the claim
	// leaves the owned set: a scrape can fall between the two.
	ok := etcdtest.WaitUntil(10*time.Second, func() bool {
		s = gather(t, reg)
		return s.sum("baton_revokes_total", map[string]string{"reason": "lease-lost"}) == 2 &&
			s.sum("baton_etcd_request_errors_total", map[string]string{"op": "keepalive"}) >= 1 &&
			s.sum("baton_syncs_owned", nil) == 0
	})
	require.True(t, ok, "lease-lost revokes %v, keepalive errors %v, owned %v",
		s.sum("baton_revokes_total", map[string]string{"reason": "lease-lost"}),
		s.sum("baton_etcd_request_errors_total", map[string]string{"op": "keepalive"}),
		s.sum("baton_syncs_owned", nil))
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		return len(gather(t, reg)["baton_lease_deadline_margin_seconds"].GetMetric()) == 0
	}), "no margin once the deadline has passed")

	w.cluster.Unblackhole(0)
	w.waitOwned(ids, 15*time.Second, "cut")
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		s = gather(t, reg)
		return s.sum("baton_syncs_owned", nil) == 2 && len(s["baton_lease_deadline_margin_seconds"].GetMetric()) == 1
	}), "the member rejoined: owns its syncs and reports a margin again")
}
