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
// sendTime + TTL, so deadline = sendTime + TTL - margin is a local instant by
// which the member may safely stop all work. (clientv3's own keep-alive loop,
// which the concurrency.Session also runs, measures from the response's
// arrival, which can be a round trip too late.)
type session struct {
	cli           *clientv3.Client
	cs            *concurrency.Session
	id            clientv3.LeaseID
	ttl           time.Duration // as granted by etcd
	margin        time.Duration
	revokeTimeout time.Duration
	interval      time.Duration
	log           *slog.Logger
	m             *metrics

	mu       sync.Mutex
	deadline time.Time
	lostErr  error

	// riskCtx is cancelled when the lease is at risk (deadline - revokeTimeout
	// passed without a renewal) or known to be gone. Everything the session
	// owns stops with it.
	riskCtx context.Context
	risk    context.CancelCauseFunc
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

var errLeaseGone = errors.New("coordinator: membership lease expired or revoked")

// newSession grants a lease of ttl and starts renewing it.
func newSession(ctx context.Context, cli *clientv3.Client, ttl, revokeTimeout time.Duration, log *slog.Logger, m *metrics) (*session, error) {
	sent := time.Now()
	resp, err := cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("coordinator: grant lease: %w", err)
	}
	granted := time.Duration(resp.TTL) * time.Second
	riskCtx, risk := context.WithCancelCause(context.Background())
	// The concurrency.Session shares the lease; it is what the election
	// campaigns with. Its context is ours, so it ends when we abandon the lease.
	cs, err := concurrency.NewSession(cli, concurrency.WithLease(resp.ID), concurrency.WithContext(riskCtx))
	if err != nil {
		risk(err)
		rctx, cancel := context.WithTimeout(context.Background(), granted)
		_, _ = cli.Revoke(rctx, resp.ID)
		cancel()
		return nil, fmt.Errorf("coordinator: start session: %w", err)
	}
	s := &session{
		cli:           cli,
		cs:            cs,
		id:            resp.ID,
		ttl:           granted,
		margin:        granted / 20,
		revokeTimeout: revokeTimeout,
		log:           log,
		m:             m,
		riskCtx:       riskCtx,
		risk:          risk,
	}
	// Three chances to renew before the lease comes at risk.
	s.interval = max((granted-s.margin-revokeTimeout)/3, 50*time.Millisecond)
	s.deadline = sent.Add(granted - s.margin)
	loopCtx, stop := context.WithCancel(riskCtx)
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

// atRiskAt is when the lease-lost revoke must start.
func (s *session) atRiskAt() time.Time { return s.Deadline().Add(-s.revokeTimeout) }

// Lost is closed once the lease is at risk or gone.
func (s *session) Lost() <-chan struct{} { return s.riskCtx.Done() }

// Err says why the session was lost, nil while it holds.
func (s *session) Err() error {
	if s.riskCtx.Err() == nil {
		return nil
	}
	return context.Cause(s.riskCtx)
}

func (s *session) lose(err error) {
	s.risk(err)
}

func (s *session) keepAlive(ctx context.Context) {
	defer s.wg.Done()
	risk := time.NewTimer(time.Until(s.atRiskAt()))
	defer risk.Stop()
	next := time.NewTimer(s.interval)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.cs.Done():
			s.lose(errLeaseGone)
			return
		case <-risk.C:
			s.lose(fmt.Errorf("coordinator: lease not renewed in time (deadline %s, revoke budget %v)", s.Deadline().Format(time.RFC3339Nano), s.revokeTimeout))
			return
		case <-next.C:
		}
		// Never wait past the instant the revoke must start: a renewal that
		// answers later is no use.
		actx, cancel := context.WithDeadline(ctx, s.atRiskAt())
		sent := time.Now()
		resp, err := s.cli.KeepAliveOnce(actx, s.id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			d := sent.Add(time.Duration(resp.TTL)*time.Second - s.margin)
			s.mu.Lock()
			if d.After(s.deadline) {
				s.deadline = d
			}
			s.mu.Unlock()
			s.m.deadlineMargin(time.Until(d))
			risk.Reset(time.Until(s.atRiskAt()))
			next.Reset(s.interval)
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.lose(errLeaseGone)
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

// close stops renewing. With revoke it also revokes the lease (bounded by
// ctx), which deletes every key the session holds at once.
func (s *session) close(ctx context.Context, revoke bool) {
	s.stop()
	s.wg.Wait()
	s.cs.Orphan()
	s.lose(errSessionClosed)
	if revoke {
		if _, err := s.cli.Revoke(ctx, s.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn("lease revoke failed; it will expire on its own", "error", err, "ttl", s.ttl)
		}
	}
}

var errSessionClosed = errors.New("coordinator: session closed")
