package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// session is one membership lease and the deadline Baton tracks for it.
//
// Baton renews the lease itself with KeepAliveOnce so that it knows the send
// time of every successful renewal: etcd cannot expire the lease before
// sendTime + TTL, so leaseDeadline is a local instant by
// which the member may safely stop all work. (clientv3's own keep-alive loop,
// which the concurrency.Session also runs, measures from the response's
// arrival, which can be a round trip too late.)
type session struct {
	cli           *clientv3.Client
	id            clientv3.LeaseID
	ttl           time.Duration // as granted by etcd
	revokeTimeout time.Duration
	interval      time.Duration
	log           *slog.Logger
	m             *metrics

	// mu guards deadline and election. A leaf: taken with no other lock
	// held, and nothing else is taken, called or waited on while held.
	mu       sync.Mutex
	deadline time.Time
	election *concurrency.Session // replaced when its keep-alive ends while the lease lives (see keepAlive)

	// atRisk ends once the lease is at risk: its deadline minus the revoke
	// budget passed without a renewal, or it is known to be gone, or the
	// session was closed or given up (markAtRisk). Everything the session
	// owns stops with it: it is the one signal for "the lease is at risk".
	atRisk     context.Context
	markAtRisk context.CancelCauseFunc
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

// deadlineMargin is the share of the TTL kept between a member's deadline
// and the earliest instant etcd can expire its lease, for clock-rate
// differences between the member and etcd's leader.
const deadlineMargin = 20 // 1/20 of the TTL: 5%

// leaseDeadline is the local instant by which a member must have stopped
// all work on a lease renewed (or granted) by a request sent at sent, with
// ttl as the answer gave it: etcd cannot expire the lease before
// sent + ttl, and the margin covers clock-rate differences. It is the one
// place the formula lives.
func leaseDeadline(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - ttl/deadlineMargin)
}

var errLeaseGone = errors.New("coordinator: membership lease expired or revoked")

// newSession grants a lease of ttl and starts renewing it.
func newSession(ctx context.Context, cli *clientv3.Client, ttl, revokeTimeout time.Duration, log *slog.Logger, m *metrics) (*session, error) {
	sent := time.Now()
	// A grant whose answer never comes must not hold a rejoin for good;
	// one granted anyway expires unused.
	gctx, cancel := context.WithTimeout(ctx, ttl)
	resp, err := cli.Grant(gctx, int64(ttl/time.Second))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("coordinator: grant lease: %w", err)
	}
	granted := time.Duration(resp.TTL) * time.Second
	atRisk, markAtRisk := context.WithCancelCause(context.Background())
	// The concurrency.Session shares the lease; it is what the election
	// campaigns with. Its context is ours, so it ends when we abandon the lease.
	cs, err := concurrency.NewSession(cli, concurrency.WithLease(resp.ID), concurrency.WithContext(atRisk))
	if err != nil {
		markAtRisk(err)
		rctx, cancel := context.WithTimeout(context.Background(), granted)
		_, _ = cli.Revoke(rctx, resp.ID)
		cancel()
		return nil, fmt.Errorf("coordinator: start session: %w", err)
	}
	s := &session{
		cli:           cli,
		id:            resp.ID,
		ttl:           granted,
		revokeTimeout: revokeTimeout,
		log:           log,
		m:             m,
		atRisk:        atRisk,
		markAtRisk:    markAtRisk,
		election:      cs,
		deadline:      leaseDeadline(sent, granted),
	}
	// Three chances to renew before the lease comes at risk.
	s.interval = max((s.deadline.Sub(sent)-revokeTimeout)/3, 50*time.Millisecond)
	m.deadlineMargin(time.Until(s.deadline))
	loopCtx, stop := context.WithCancel(atRisk)
	s.stop = stop
	s.wg.Add(1)
	go s.keepAlive(loopCtx)
	return s, nil
}

// Deadline is the local instant by which all work must have stopped unless
// the lease is renewed first.
func (s *session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline
}

// atRiskAt is when the lease comes at risk unless it is renewed first:
// the lease-lost revoke must start then, to end by the deadline.
func (s *session) atRiskAt() time.Time { return s.Deadline().Add(-s.revokeTimeout) }

// AtRisk is closed once the lease is at risk (see session.atRisk).
func (s *session) AtRisk() <-chan struct{} { return s.atRisk.Done() }

// isAtRisk reports whether AtRisk is closed.
func (s *session) isAtRisk() bool { return s.atRisk.Err() != nil }

// Err says why the lease came at risk, nil before.
func (s *session) Err() error {
	if !s.isAtRisk() {
		return nil
	}
	return context.Cause(s.atRisk)
}

// electionSession is the concurrency.Session to campaign with: it shares
// the lease, and is replaced when its own keep-alive ends while the lease
// lives on.
func (s *session) electionSession() *concurrency.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.election
}

func (s *session) keepAlive(ctx context.Context) {
	defer s.wg.Done()
	risk := time.NewTimer(time.Until(s.atRiskAt()))
	defer risk.Stop()
	next := time.NewTimer(s.interval)
	defer next.Stop()
	csDone := s.electionSession().Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-csDone:
			// clientv3 ends the concurrency session's keep-alive when the
			// lease is gone, but also when its stream went a TTL without
			// an answer, as a stream stuck on an unresponsive etcd member
			// does while renewals through the others succeed. Renew now to
			// tell which.
			csDone = nil
			next.Reset(0)
			continue
		case <-risk.C:
			s.markAtRisk(fmt.Errorf("coordinator: lease not renewed in time (deadline %s, revoke budget %v)", s.Deadline().Format(time.RFC3339Nano), s.revokeTimeout))
			return
		case <-next.C:
		}
		// Never wait past the instant the revoke must start: a renewal that
		// answers later is no use.
		sent, resp, err := s.renew(ctx, s.atRiskAt())
		switch {
		case err == nil && resp.TTL > 0:
			s.extend(leaseDeadline(sent, time.Duration(resp.TTL)*time.Second))
			risk.Reset(time.Until(s.atRiskAt()))
			next.Reset(s.interval)
			if csDone == nil {
				csDone = s.renewElection()
			}
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.markAtRisk(errLeaseGone)
			return
		default:
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("lease renewal failed", "error", err, "deadline", s.Deadline())
			s.m.etcdError("keepalive")
			next.Reset(max(s.interval/4, 20*time.Millisecond))
		}
	}
}

// extend moves the deadline to d, if that is later.
func (s *session) extend(d time.Time) {
	s.mu.Lock()
	if d.After(s.deadline) {
		s.deadline = d
	}
	s.mu.Unlock()
	s.m.deadlineMargin(time.Until(d))
}

// renewElection replaces the concurrency session the election campaigns
// with, whose keep-alive ended while the lease lives. It returns the new
// one's Done channel, or nil if it could not be made (the next renewal
// tries again).
func (s *session) renewElection() <-chan struct{} {
	cs, err := concurrency.NewSession(s.cli, concurrency.WithLease(s.id), concurrency.WithContext(s.atRisk))
	if err != nil {
		return nil
	}
	s.log.Info("etcd keep-alive stream ended while the lease lived; new concurrency session")
	s.mu.Lock()
	s.election = cs
	s.mu.Unlock()
	return cs.Done()
}

// renew renews the lease once, waiting at most until deadline, and returns
// the send time of the request that was answered. While no answer has come
// it sends another request every interval/2, without cancelling those in
// flight: a request stuck on an unresponsive etcd member (a partition the
// client has not noticed yet) would otherwise use up the whole window, while
// a new request goes out on another connection; and a slow but live etcd
// still has the whole window to answer.
func (s *session) renew(ctx context.Context, deadline time.Time) (time.Time, *clientv3.LeaseKeepAliveResponse, error) {
	type answer struct {
		sent time.Time
		resp *clientv3.LeaseKeepAliveResponse
		err  error
	}
	hedge := max(s.interval/2, 50*time.Millisecond)
	answers := make(chan answer, max(int(time.Until(deadline)/hedge), 0)+2)
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	inflight := 0
	send := func() {
		inflight++
		wg.Add(1)
		go func(sent time.Time) {
			defer wg.Done()
			resp, err := s.cli.KeepAliveOnce(actx, s.id)
			answers <- answer{sent, resp, err}
		}(time.Now())
	}
	send()
	again := time.NewTimer(hedge)
	defer again.Stop()
	for {
		select {
		case a := <-answers:
			inflight--
			if a.err == nil || inflight == 0 || errors.Is(a.err, rpctypes.ErrLeaseNotFound) || actx.Err() != nil {
				return a.sent, a.resp, a.err
			}
		case <-again.C:
			if cap(answers) > inflight {
				send()
			}
			again.Reset(hedge)
		}
	}
}

// close stops renewing and leaves the lease to expire, a TTL later: for a
// client that is closed, or a lease that is gone.
func (s *session) close() {
	s.stop()
	s.wg.Wait()
	s.m.sessionEnded()
	s.electionSession().Orphan()
	s.markAtRisk(errSessionClosed)
}

// closeAndRevoke closes the session and revokes its lease (bounded by ctx),
// which deletes every key the session holds at once. A revoke that fails
// leaves the lease to expire.
func (s *session) closeAndRevoke(ctx context.Context) {
	s.close()
	if _, err := s.cli.Revoke(ctx, s.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.log.Warn("lease revoke failed; it will expire on its own", "error", err, "ttl", s.ttl)
	}
}

var errSessionClosed = errors.New("coordinator: session closed")
