package coordinator

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/rebalance"
)

// balancerGrace is how long a Balancer call may take to return after its
// ctx is done before it counts as ignoring it and is abandoned.
const balancerGrace = 100 * time.Millisecond

// balancerCalls tracks a coordinator's Balancer call abandoned at its
// budget, if it has not returned yet.
type balancerCalls struct {
	abandoned atomic.Bool
}

// fallbackBalancer places syncs while an abandoned call of the configured
// Balancer still runs.
var fallbackBalancer = rebalance.Sticky()

type balanceResult struct {
	plan assignment.Plan
	err  error
}

// balance calls the Balancer on its own goroutine with a deadline (the
// TTL), and turns an error, a panic or an overrun into an error; the
// previous targets then stand, and the caller retries. A call that ignores
// its ctx past the budget (and a grace), or that is still running when
// leadership ends, is abandoned, not waited for: a Balancer that hangs must
// not wedge the leader (nor Leave, which waits for the leader loop). Its
// late result is dropped.
//
// The Balancer is never called concurrently with itself, an abandoned call
// included: until that call returns, every round plans with
// fallbackBalancer instead (counted as "fallback"), so a hung Balancer
// neither wedges the group nor leaks a goroutine per round.
func (c *Coordinator) balance(ctx context.Context, in rebalance.Input, calls *balancerCalls) (assignment.Plan, error) {
	if calls.abandoned.Load() {
		c.m.balancerError("fallback")
		c.log.Warn("an abandoned Balancer call is still running; the built-in Sticky balancer plans meanwhile")
		fctx, cancel := context.WithTimeout(ctx, c.o.ttl)
		defer cancel()
		return fallbackBalancer.Balance(fctx, in)
	}
	bctx, cancel := context.WithTimeout(ctx, c.o.ttl)
	defer cancel()
	r, abandoned := c.callBalancer(bctx, in, calls)
	switch {
	case abandoned && ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case abandoned:
		c.m.balancerError("timeout")
		return nil, fmt.Errorf("coordinator: balancer ignored its ctx past its %v budget; the call is abandoned, and the built-in Sticky balancer plans until it returns",
			c.o.ttl)
	case errors.Is(r.err, errBalancerPanic):
		c.m.balancerError("panic")
		return nil, r.err
	case r.err != nil:
		c.m.balancerError("error")
		return nil, fmt.Errorf("coordinator: balancer: %w", r.err)
	case bctx.Err() != nil && ctx.Err() == nil:
		c.m.balancerError("timeout")
		return nil, fmt.Errorf("coordinator: balancer overran its %v budget", c.o.ttl)
	case r.plan == nil:
		r.plan = assignment.Plan{}
	}
	return r.plan, nil
}

// callBalancer calls the Balancer with bctx on a goroutine of its own, a
// panic recovered as an error, and waits for it until bctx ends. A
// Balancer that honours its ctx returns then: the call is waited for a
// grace more, and abandoned only if it ignores its ctx; calls.abandoned
// then stays set until it returns.
func (c *Coordinator) callBalancer(bctx context.Context, in rebalance.Input, calls *balancerCalls) (r balanceResult, abandoned bool) {
	done := make(chan balanceResult, 1)
	var state atomic.Int32 // 0 running, 1 returned in time, 2 abandoned
	go func() {
		var r balanceResult
		defer func() {
			if p := recover(); p != nil {
				r = balanceResult{err: fmt.Errorf("%w: %v\n%s", errBalancerPanic, p, debug.Stack())}
			}
			if !state.CompareAndSwap(0, 1) {
				calls.abandoned.Store(false)
			}
			done <- r
		}()
		r.plan, r.err = c.o.balancer.Balance(bctx, in)
	}()
	select {
	case r = <-done:
		return r, false
	case <-bctx.Done():
	}
	grace := time.NewTimer(balancerGrace)
	defer grace.Stop()
	select {
	case r = <-done:
		return r, false
	case <-grace.C:
	}
	calls.abandoned.Store(true)
	if state.CompareAndSwap(0, 2) {
		return balanceResult{}, true
	}
	calls.abandoned.Store(false) // it returned just now
	return <-done, false
}

var errBalancerPanic = errors.New("coordinator: balancer panicked")
