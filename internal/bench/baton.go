package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
)

const (
	batonPrefix    = coordinator.DefaultPrefix
	baselinePrefix = "/baseline"
)

// system is one way of running syncs on a group of members: Baton, or the
// hand-written baseline.
type system interface {
	name() string
	// join starts member id of group, reporting ownership to tr, and
	// returns once it is registered.
	join(ctx context.Context, group, id string, tr reporter) (member, error)
}

// member is one running member of a system.
type member interface {
	id() string
	// drain moves every sync away and returns once the member runs none.
	drain(ctx context.Context) error
	// leave stops the member gracefully.
	leave(ctx context.Context) error
	// crash closes the member's etcd client: no goodbye, its lease is left
	// to expire. It returns at once.
	crash()
	// stopped is closed once the member has stopped after a crash or leave.
	stopped() <-chan struct{}
	isLeader() bool
	usage() usage
}

// batonSystem runs members with coordinator.New + Join.
type batonSystem struct {
	env    *etcdEnv
	ttl    time.Duration
	settle time.Duration
	// trailing turns the leader's leading edge off (coordinator.WithLeadingEdge):
	// every change waits Settle, as before leading-edge rebalancing.
	trailing bool
	// startCost is what a sync's start costs its handler (OnAssign blocks
	// this long before the sync runs), unless it was prepared; prepare
	// makes the handler a Preparer whose OnPrepare pays that cost ahead.
	startCost time.Duration
	prepare   bool
	// reg collects every member's Baton metrics (labelled by group and
	// member), to count rebalance rounds.
	reg *prometheus.Registry
}

func newBatonSystem(env *etcdEnv, ttl, settle time.Duration) *batonSystem {
	return &batonSystem{env: env, ttl: ttl, settle: settle, reg: prometheus.NewRegistry()}
}

func (s *batonSystem) name() string {
	switch {
	case s.trailing:
		return "baton-trailing"
	case s.startCost > 0 && s.prepare:
		return "baton-warm"
	case s.startCost > 0:
		return "baton-cold"
	}
	return "baton"
}

// isBaton tells Baton's systems (baton, baton-trailing) from the others.
func isBaton(system string) bool { return strings.HasPrefix(system, "baton") }

type batonMember struct {
	mid string
	cli *clientv3.Client
	cnt *counter
	co  *coordinator.Coordinator
}

func (s *batonSystem) join(ctx context.Context, group, id string, tr reporter) (member, error) {
	cnt := newCounter()
	cli, err := s.env.client(cnt)
	if err != nil {
		return nil, err
	}
	var h coordinator.Handler
	if s.startCost > 0 {
		h = newCostlyHandler(id, tr, s.startCost, s.prepare)
	}
	co, err := newBatonCoordinator(cli, group, id, s.ttl, s.settle, s.reg, tr, h, coordinator.WithLeadingEdge(!s.trailing))
	if err != nil {
		cli.Close()
		return nil, err
	}
	if err := co.Join(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("join %s: %w", id, err)
	}
	return &batonMember{mid: id, cli: cli, cnt: cnt, co: co}, nil
}

// newBatonCoordinator builds a member whose handler does no work of its
// own: OnAssign and OnRevoke only report to tr, so the
// figures are Baton's alone.
func newBatonCoordinator(cli *clientv3.Client, group, id string, ttl, settle time.Duration, reg prometheus.Registerer, tr reporter, h coordinator.Handler, extra ...coordinator.Option) (*coordinator.Coordinator, error) {
	if h == nil {
		h = coordinator.HandlerFuncs{
			Assign: func(_ context.Context, c *assignment.Claim) error {
				tr.assign(id, c.ID(), c.Token())
				return nil
			},
			Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
				tr.revoke(id, c.ID(), c.Token())
			},
		}
	}
	opts := []coordinator.Option{
		coordinator.WithMemberID(id),
		coordinator.WithTTL(ttl),
		coordinator.WithSettle(settle),
	}
	if reg != nil {
		opts = append(opts, coordinator.WithMetrics(reg))
	}
	return coordinator.New(cli, group, h, append(opts, extra...)...)
}

func (m *batonMember) id() string                      { return m.mid }
func (m *batonMember) drain(ctx context.Context) error { return m.co.Drain(ctx) }
func (m *batonMember) crash()                          { m.cli.Close() }
func (m *batonMember) stopped() <-chan struct{}        { return m.co.Done() }
func (m *batonMember) isLeader() bool                  { return m.co.IsLeader() }
func (m *batonMember) usage() usage                    { return m.cnt.snapshot() }
func (m *batonMember) leave(ctx context.Context) error {
	err := m.co.Leave(ctx)
	m.cli.Close()
	return err
}

// rebalances sums a Baton counter (baton_rebalances_total,
// baton_moves_total) over the members of group.
func (s *batonSystem) counterSum(group, name string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if labelValue(m, "group") == group && m.Counter != nil {
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// costlyHandler is a handler whose syncs cost cost to start (a snapshot to
// load, a slot to open): OnAssign blocks that long before the sync runs
// (and is reported to the tracker), unless OnPrepare has paid it ahead.
// With prepare off it is no Preparer.
type costlyHandler struct {
	coordinator.HandlerFuncs
	id   string
	cost time.Duration

	mu   sync.Mutex
	warm map[string]bool // syncs prepared and not yet started
}

type preparingCostly struct{ *costlyHandler }

func (h preparingCostly) OnPrepare(ctx context.Context, s assignment.Sync) error {
	select {
	case <-time.After(h.cost):
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	h.warm[s.ID] = true
	h.mu.Unlock()
	return nil
}

func newCostlyHandler(id string, tr reporter, cost time.Duration, prepare bool) coordinator.Handler {
	h := &costlyHandler{id: id, cost: cost, warm: map[string]bool{}}
	h.HandlerFuncs = coordinator.HandlerFuncs{
		Assign: func(ctx context.Context, c *assignment.Claim) error {
			h.mu.Lock()
			warm := h.warm[c.ID()]
			delete(h.warm, c.ID())
			h.mu.Unlock()
			if !warm {
				select {
				case <-time.After(h.cost):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			tr.assign(id, c.ID(), c.Token())
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			tr.revoke(id, c.ID(), c.Token())
		},
	}
	if prepare {
		return preparingCostly{h}
	}
	return h
}
