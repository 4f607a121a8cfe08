package simetcd

import (
	"context"
	"io"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// stream is the server's side of one gRPC stream: what ends it and why.
type stream struct {
	ctx           context.Context // the client's
	requireLeader bool
	done          chan struct{}
	once          sync.Once
	err           error // set before done is closed
}

func newStream(ctx context.Context) *stream {
	return &stream{ctx: ctx, requireLeader: requiresLeader(ctx), done: make(chan struct{})}
}

// requiresLeader reports whether a request was made with
// clientv3.WithRequireLeader.
func requiresLeader(ctx context.Context) bool {
	md, _ := metadata.FromOutgoingContext(ctx)
	lead := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(lead) > 0 && lead[0] == rpctypes.MetadataHasLeader
}

// close ends the stream with err; the first call wins.
func (st *stream) close(err error) {
	st.once.Do(func() {
		st.err = err
		close(st.done)
	})
}

// clientStream is the client's side of a bidirectional stream: Send runs
// the server's handler on the caller's goroutine, Recv takes what the server
// put in out.
type clientStream[Req, Res any] struct {
	st     *stream
	onSend func(*Req)
	out    chan *Res
}

func (c *clientStream[Req, Res]) Send(r *Req) error {
	select {
	case <-c.st.done:
		return io.EOF // as gRPC does; Recv tells why
	default:
	}
	c.onSend(r)
	return nil
}

func (c *clientStream[Req, Res]) Recv() (*Res, error) {
	// A response already queued is delivered before the stream's end, as
	// gRPC delivers what it received before a status.
	select {
	case r := <-c.out:
		return r, nil
	default:
	}
	select {
	case r := <-c.out:
		return r, nil
	case <-c.st.done:
		return nil, c.st.err
	case <-c.st.ctx.Done():
		c.st.close(c.st.ctx.Err())
		return nil, c.st.ctx.Err()
	}
}

// send queues a response for Recv; false once the stream has ended.
func (c *clientStream[Req, Res]) send(r *Res) bool {
	select {
	case c.out <- r:
		return true
	case <-c.st.done:
		return false
	case <-c.st.ctx.Done():
		c.st.close(c.st.ctx.Err())
		return false
	}
}

func (c *clientStream[Req, Res]) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (c *clientStream[Req, Res]) Trailer() metadata.MD         { return metadata.MD{} }
func (c *clientStream[Req, Res]) CloseSend() error             { return nil }
func (c *clientStream[Req, Res]) Context() context.Context     { return c.st.ctx }
func (c *clientStream[Req, Res]) SendMsg(m any) error          { return c.Send(m.(*Req)) }
func (c *clientStream[Req, Res]) RecvMsg(m any) error {
	r, err := c.Recv()
	if err != nil {
		return err
	}
	dst := m.(proto.Message)
	proto.Reset(dst)
	proto.Merge(dst, any(r).(proto.Message))
	return nil
}
