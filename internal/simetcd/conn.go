package simetcd

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what a fault does to one request.
type Kind int

const (
	// Pass lets the request through.
	Pass Kind = iota
	// Refuse fails the request without applying it (codes.Unavailable).
	Refuse
	// Lose applies the request and loses its answer: the client gets
	// codes.Unavailable for a request etcd applied.
	Lose
	// Hang holds the request, unapplied, until its ctx ends.
	Hang
	// HangApplied applies the request and holds the answer until the ctx
	// ends: the client's deadline passes on a request etcd applied.
	HangApplied
)

// Fault is the fate of one request.
type Fault struct {
	Delay time.Duration // before the request reaches the server
	Kind  Kind
}

// Injector decides each request's fault. method is the gRPC method's short
// name: "Range", "Put", "DeleteRange", "Txn", "Compact", "LeaseGrant",
// "LeaseRevoke", "LeaseTimeToLive", "LeaseLeases", "LeaseKeepAlive" (one
// keep-alive) or "Watch" (opening a stream). It is called on the client's
// goroutine and must not block.
type Injector func(method string) Fault

// Conn is one client's connection to a Server, where faults are injected.
type Conn struct {
	s *Server

	mu      sync.Mutex // leaf
	inject  Injector
	cut     chan struct{} // closed when not cut off; replaced by Cut
	isCut   bool
	slow    float64          // see SetClockSkew
	streams map[*stream]bool // open streams; true for watch streams
}

// Connect opens a Conn to s.
func (s *Server) Connect() *Conn {
	c := &Conn{s: s, cut: make(chan struct{}), streams: map[*stream]bool{}}
	close(c.cut)
	return c
}

// Client returns a clientv3 client over the Conn. Close it as usual; that
// ends its streams. A crash is a Close with no goodbye (no Revoke).
func (c *Conn) Client() *clientv3.Client {
	cli := clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(zap.NewNop()))
	cli.KV = clientv3.NewKVFromKVClient(kvClient{c}, cli)
	// clientv3.New passes DialTimeout+1s, which is 1s by default.
	cli.Lease = clientv3.NewLeaseFromLeaseClient(leaseClient{c}, cli, time.Second)
	cli.Watcher = clientv3.NewWatchFromWatchClient(watchClient{c}, cli)
	return cli
}

// SetInjector sets the fault injector; nil lets every request through.
func (c *Conn) SetInjector(f Injector) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inject = f
}

// Cut cuts the client off until Heal: requests hang until their ctx ends,
// unapplied; open streams end with codes.Unavailable, and new ones wait for
// Heal, as with gRPC's WaitForReady, which clientv3 sets.
func (c *Conn) Cut() {
	c.mu.Lock()
	if c.isCut {
		c.mu.Unlock()
		return
	}
	c.isCut = true
	c.cut = make(chan struct{})
	open := c.openStreams(false)
	c.mu.Unlock()
	for _, st := range open {
		st.close(status.Error(codes.Unavailable, "simetcd: connection cut"))
	}
}

// Heal ends a Cut.
func (c *Conn) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isCut {
		c.isCut = false
		close(c.cut)
	}
}

// BreakWatches ends the client's open watch streams with err: with
// codes.Unavailable clientv3 opens a new stream and resumes each watch after
// its last revision (a compaction meanwhile makes that fail with
// ErrCompacted); with rpctypes.ErrGRPCNoLeader the watches opened with
// WithRequireLeader end and their channels close.
func (c *Conn) BreakWatches(err error) {
	c.mu.Lock()
	open := c.openStreams(true)
	c.mu.Unlock()
	for _, st := range open {
		st.close(err)
	}
}

func (c *Conn) openStreams(watchOnly bool) []*stream {
	var out []*stream
	for st, watch := range c.streams {
		if watch || !watchOnly {
			out = append(out, st)
		}
	}
	return out
}

// fault is the fate of the next request of method, after waiting out a cut.
func (c *Conn) fault(ctx context.Context, method string) (Fault, error) {
	c.mu.Lock()
	inject, cut := c.inject, c.cut
	c.mu.Unlock()
	select {
	case <-cut:
	case <-ctx.Done():
		return Fault{}, ctx.Err()
	}
	if inject == nil {
		return Fault{}, nil
	}
	f := inject(method)
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Fault{}, ctx.Err()
		}
	}
	return f, nil
}

var (
	errRefused = status.Error(codes.Unavailable, "simetcd: injected: request refused")
	errLost    = status.Error(codes.Unavailable, "simetcd: injected: answer lost")
)

// unary runs one request through the Conn's faults.
func unary[Req, Res any](c *Conn, ctx context.Context, method string, r *Req, serve func(context.Context, *Req) (*Res, error)) (*Res, error) {
	f, err := c.fault(ctx, method)
	if err != nil {
		return nil, err
	}
	switch f.Kind {
	case Refuse:
		return nil, errRefused
	case Hang:
		<-ctx.Done()
		return nil, ctx.Err()
	}
	resp, err := serve(ctx, r)
	switch f.Kind {
	case Lose:
		return nil, errLost
	case HangApplied:
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return resp, err
}

// track registers a stream with the Conn and the Server.
func (c *Conn) track(st *stream, watch bool) {
	c.mu.Lock()
	c.streams[st] = watch
	c.mu.Unlock()
	c.s.wg.Add(1)
	go func() {
		defer c.s.wg.Done()
		select {
		case <-st.done:
		case <-st.ctx.Done():
			st.close(st.ctx.Err())
		case <-c.s.stop:
			st.close(errStopped)
		}
		c.mu.Lock()
		delete(c.streams, st)
		c.mu.Unlock()
	}()
}

var errStopped = status.Error(codes.Unavailable, "simetcd: server stopped")

type kvClient struct{ c *Conn }

func (k kvClient) Range(ctx context.Context, r *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	return unary(k.c, ctx, "Range", r, k.c.s.Range)
}

func (k kvClient) RangeStream(context.Context, *pb.RangeRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[pb.RangeStreamResponse], error) {
	return nil, status.Error(codes.Unimplemented, "simetcd: RangeStream is not modelled")
}

func (k kvClient) Put(ctx context.Context, r *pb.PutRequest, _ ...grpc.CallOption) (*pb.PutResponse, error) {
	return unary(k.c, ctx, "Put", r, k.c.s.Put)
}

func (k kvClient) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest, _ ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	return unary(k.c, ctx, "DeleteRange", r, k.c.s.DeleteRange)
}

func (k kvClient) Txn(ctx context.Context, r *pb.TxnRequest, _ ...grpc.CallOption) (*pb.TxnResponse, error) {
	return unary(k.c, ctx, "Txn", r, k.c.s.Txn)
}

func (k kvClient) Compact(ctx context.Context, r *pb.CompactionRequest, _ ...grpc.CallOption) (*pb.CompactionResponse, error) {
	return unary(k.c, ctx, "Compact", r, k.c.s.Compact)
}

type leaseClient struct{ c *Conn }

func (l leaseClient) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest, _ ...grpc.CallOption) (*pb.LeaseGrantResponse, error) {
	slow := l.c.clockSkew()
	return unary(l.c, ctx, "LeaseGrant", r, func(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
		return l.c.s.grant(ctx, r, slow)
	})
}

func (l leaseClient) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest, _ ...grpc.CallOption) (*pb.LeaseRevokeResponse, error) {
	return unary(l.c, ctx, "LeaseRevoke", r, l.c.s.LeaseRevoke)
}

func (l leaseClient) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest, _ ...grpc.CallOption) (*pb.LeaseTimeToLiveResponse, error) {
	return unary(l.c, ctx, "LeaseTimeToLive", r, l.c.s.LeaseTimeToLive)
}

func (l leaseClient) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest, _ ...grpc.CallOption) (*pb.LeaseLeasesResponse, error) {
	return unary(l.c, ctx, "LeaseLeases", r, l.c.s.LeaseLeases)
}

// openStream opens a stream as clientv3's calls do with gRPC's
// WaitForReady: on a cut connection it waits for Heal (or ctx). Of the
// injector's fault only the delay applies: a stream that opens and then
// stays silent is not modelled, since only gRPC keepalives end one (see
// docs/failure-model.md, known limits); streams fail through Cut and
// BreakWatches instead. Failing at once would not do either: clientv3's
// KeepAliveOnce retries a failed open with no pause.
func (c *Conn) openStream(ctx context.Context, method string) error {
	_, err := c.fault(ctx, method)
	return err
}

// LeaseKeepAlive opens a keep-alive stream: each request is one renewal,
// through the Conn's faults ("LeaseKeepAlive"); a renewal that is refused,
// lost or held gets no answer, as on a connection that dropped it.
func (l leaseClient) LeaseKeepAlive(ctx context.Context, _ ...grpc.CallOption) (grpc.BidiStreamingClient[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse], error) {
	if err := l.c.openStream(ctx, "LeaseKeepAlive"); err != nil {
		return nil, err
	}
	st := newStream(ctx)
	if err := l.c.s.track(st); err != nil {
		return nil, err
	}
	cs := &clientStream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]{st: st, out: make(chan *pb.LeaseKeepAliveResponse, 16)}
	cs.onSend = func(r *pb.LeaseKeepAliveRequest) {
		f, err := l.c.fault(st.ctx, "LeaseKeepAlive")
		if err != nil || f.Kind == Refuse || f.Kind == Hang {
			return
		}
		resp, err := l.c.s.renew(st.ctx, r.ID)
		if err != nil {
			st.close(err)
			return
		}
		if f.Kind == Pass {
			cs.send(resp)
		}
	}
	l.c.track(st, false)
	l.c.s.wg.Add(1)
	go func() {
		defer l.c.s.wg.Done()
		<-st.done
		l.c.s.untrack(st)
	}()
	return cs, nil
}

type watchClient struct{ c *Conn }

// Watch opens a watch stream.
func (w watchClient) Watch(ctx context.Context, _ ...grpc.CallOption) (grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse], error) {
	if err := w.c.openStream(ctx, "Watch"); err != nil {
		return nil, err
	}
	cs, err := w.c.s.openWatch(ctx)
	if err != nil {
		return nil, err
	}
	w.c.track(cs.st, true)
	return cs, nil
}
