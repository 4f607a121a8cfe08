package sim

import (
	"context"
	"errors"
	"maps"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/rebalance"
)

// handler records every ownership interval; while the world is faulty it
// is slow, fails and panics now and then. It always stops its work by
// OnRevoke's return, as the contract asks.
type handler struct {
	m  *member
	co *atomic.Pointer[coordinator.Coordinator] // set once New returns
}

var errInjected = errors.New("sim: injected OnAssign error")

func (h handler) OnAssign(ctx context.Context, c *assignment.Claim) error {
	m := h.m
	m.w.rec.Start(m.id, c.ID(), c.Token())
	// The contract: no OnAssign once the lease is at risk, when the member
	// could not be sure to stop the work by its deadline.
	if !time.Now().Before(c.Deadline().Add(-m.revoke)) {
		m.w.problem("%s: OnAssign of %s (token %d) at %v before its deadline, inside the revoke timeout %v",
			m.id, c.ID(), c.Token(), time.Until(c.Deadline()), m.revoke)
	}
	m.w.started(ownership{m.id, c.ID(), c.Token()})
	if !m.w.faulty.Load() {
		return nil
	}
	if co := h.co.Load(); co != nil && m.chance(0.05) {
		// Calls from inside a callback: Owned works, Drain and Leave are
		// refused at once whatever ctx they get.
		m.w.count("calls from OnAssign")
		_ = co.Owned()
		if err := co.Leave(context.Background()); !errors.Is(err, coordinator.ErrCalledFromCallback) {
			m.w.problem("%s: Leave from OnAssign returned %v, want ErrCalledFromCallback", m.id, err)
		}
		if err := co.Drain(context.Background()); !errors.Is(err, coordinator.ErrCalledFromCallback) {
			m.w.problem("%s: Drain from OnAssign returned %v, want ErrCalledFromCallback", m.id, err)
		}
	}
	if m.chance(0.2) {
		sleepCtx(ctx, m.dur(300*time.Millisecond))
	}
	switch {
	case m.chance(0.05):
		m.w.count("OnAssign panic")
		panic("sim: injected OnAssign panic")
	case m.chance(0.05):
		m.w.count("OnAssign error")
		return errInjected
	}
	return nil
}

func (h handler) OnRevoke(ctx context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
	m := h.m
	if m.w.faulty.Load() && m.chance(0.2) {
		sleepCtx(ctx, m.dur(400*time.Millisecond))
	}
	m.w.rec.End(m.id, c.ID(), c.Token())
	m.w.ended(ownership{m.id, c.ID(), c.Token()})
	if m.w.faulty.Load() && m.chance(0.03) {
		m.w.count("OnRevoke panic")
		panic("sim: injected OnRevoke panic (after stopping the work)")
	}
}

// preparer is the handler of a member whose Handler is a Preparer (every
// other member's): OnPrepare takes a while, honouring its ctx; while the
// world is faulty it also hangs until its ctx ends, fails, panics, or
// ignores its ctx for a while.
type preparer struct{ handler }

var errPrepare = errors.New("sim: injected OnPrepare error")

func (h preparer) OnPrepare(ctx context.Context, s assignment.Sync) error {
	m := h.m
	m.w.count("OnPrepare")
	// Preparing is never owning: a member prepares only syncs another
	// member holds.
	for _, iv := range m.w.rec.Intervals() {
		if iv.Open && iv.Sync == s.ID && iv.Member == m.id {
			m.w.problem("%s: OnPrepare of %s while it runs it (token %d)", m.id, s.ID, iv.Token)
		}
	}
	if !m.w.faulty.Load() {
		sleepCtx(ctx, m.dur(200*time.Millisecond))
		return ctx.Err()
	}
	switch {
	case m.chance(0.05):
		m.w.count("OnPrepare panic")
		panic("sim: injected OnPrepare panic")
	case m.chance(0.05):
		m.w.count("OnPrepare error")
		return errPrepare
	case m.chance(0.1):
		m.w.count("OnPrepare hangs until its ctx ends")
		<-ctx.Done()
		return ctx.Err()
	case m.chance(0.05):
		m.w.count("OnPrepare ignores its ctx")
		time.Sleep(m.dur(time.Second))
		return nil
	}
	sleepCtx(ctx, m.dur(time.Second))
	return ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// balancer wraps Sticky; while the world is faulty it errors, panics,
// returns invalid plans, or hangs ignoring its ctx, now and then.
type balancer struct {
	m    *member
	next rebalance.Balancer
}

var errBalancer = errors.New("sim: injected Balancer error")

func (b balancer) Balance(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
	m := b.m
	if m.w.faulty.Load() {
		switch {
		case m.chance(0.03):
			m.w.count("Balancer error")
			return nil, errBalancer
		case m.chance(0.02):
			m.w.count("Balancer panic")
			panic("sim: injected Balancer panic")
		case m.chance(0.02):
			// Hangs past its budget, ignoring ctx: for up to 20s, or (one
			// time in two) until the world ends. The coordinator does not
			// wait for an abandoned call; the world does, before it ends.
			forever := m.chance(0.5)
			if forever {
				m.w.count("Balancer hang for good")
			} else {
				m.w.count("Balancer hang")
			}
			if returned, ok := m.w.hanging(); ok {
				defer returned()
				if forever {
					<-m.w.release.Done()
				} else {
					sleepCtx(m.w.release, m.dur(20*time.Second))
				}
			}
		case m.chance(0.03):
			plan, err := b.next.Balance(ctx, in)
			if err != nil || len(in.Members) == 0 {
				return plan, err
			}
			m.w.count("Balancer invalid plan")
			bad := maps.Clone(plan)
			bad["no-such-sync"] = in.Members[0].ID
			return bad, nil
		}
	}
	m.w.count("Balancer call")
	return b.next.Balance(ctx, in)
}
