package main

import (
	"context"
	"fmt"
	"strings"
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
	// reg collects every member's Baton metrics (labelled by group and
	// member), to count rebalance rounds.
	reg *prometheus.Registry
}

func newBatonSystem(env *etcdEnv, ttl, settle time.Duration) *batonSystem {
	return &batonSystem{env: env, ttl: ttl, settle: settle, reg: prometheus.NewRegistry()}
}

func (s *batonSystem) name() string {
	if s.trailing {
		return "baton-trailing"
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
	co, err := newBatonCoordinator(cli, group, id, s.ttl, s.settle, s.reg, tr, coordinator.WithLeadingEdge(!s.trailing))
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
func newBatonCoordinator(cli *clientv3.Client, group, id string, ttl, settle time.Duration, reg prometheus.Registerer, tr reporter, extra ...coordinator.Option) (*coordinator.Coordinator, error) {
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			tr.assign(id, c.ID(), c.Token())
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			tr.revoke(id, c.ID(), c.Token())
		},
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
