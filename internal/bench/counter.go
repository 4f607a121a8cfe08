package main

import (
	"context"
	"maps"
	"strings"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// callStats counts one gRPC method's traffic as the client sees it.
type callStats struct {
	Calls     int64 `json:"calls"`             // unary calls (each retry counts), or messages sent on streams
	Streams   int64 `json:"streams,omitempty"` // streams opened
	BytesSent int64 `json:"bytes_sent"`        // protobuf size of what was sent
	Recv      int64 `json:"recv"`              // responses, or messages received on streams
	BytesRecv int64 `json:"bytes_recv"`        // protobuf size of what was received
	// MaxSent is the largest single request (or stream message) sent, over
	// the client's life: a max cannot be taken apart by phase.
	MaxSent int64 `json:"max_sent_bytes,omitempty"`
}

// usage is a snapshot of a client's traffic by method ("KV/Txn",
// "Lease/LeaseKeepAlive", …). Write transactions are counted apart from
// read-only ones, as "KV/Txn(write)".
type usage map[string]callStats

// counter is a gRPC client interceptor pair that counts every request a
// member's etcd client sends. It sits below clientv3's retry interceptor,
// so a retried call counts once per attempt: what etcd actually served.
type counter struct {
	mu sync.Mutex
	m  map[string]*callStats
}

func newCounter() *counter { return &counter{m: map[string]*callStats{}} }

// dialOptions installs the counter in a clientv3.Config.
func (c *counter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(c.unary),
		grpc.WithChainStreamInterceptor(c.stream),
	}
}

func shortMethod(m string) string { return strings.TrimPrefix(m, "/etcdserverpb.") }

func size(m any) int64 {
	if pm, ok := m.(proto.Message); ok {
		return int64(proto.Size(pm))
	}
	return 0
}

// isWriteTxn reports whether a Txn may write: a put or a delete in either
// branch (nested Txns included).
func isWriteTxn(t *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil, op.GetRequestDeleteRange() != nil:
				return true
			case op.GetRequestTxn() != nil && isWriteTxn(op.GetRequestTxn()):
				return true
			}
		}
	}
	return false
}

func (c *counter) stats(method string) *callStats {
	s := c.m[method]
	if s == nil {
		s = &callStats{}
		c.m[method] = s
	}
	return s
}

func (c *counter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	name := shortMethod(method)
	if t, ok := req.(*pb.TxnRequest); ok && isWriteTxn(t) {
		name += "(write)"
	}
	sent := size(req)
	var got int64
	if err == nil {
		got = size(reply)
	}
	c.mu.Lock()
	s := c.stats(name)
	s.Calls++
	s.BytesSent += sent
	s.MaxSent = max(s.MaxSent, sent)
	if err == nil {
		s.Recv++
		s.BytesRecv += got
	}
	c.mu.Unlock()
	return err
}

func (c *counter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	name := shortMethod(method)
	c.mu.Lock()
	c.stats(name).Streams++
	c.mu.Unlock()
	return &countedStream{ClientStream: cs, c: c, name: name}, nil
}

type countedStream struct {
	grpc.ClientStream
	c    *counter
	name string
}

func (s *countedStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if err == nil {
		n := size(m)
		s.c.mu.Lock()
		st := s.c.stats(s.name)
		st.Calls++
		st.BytesSent += n
		s.c.mu.Unlock()
	}
	return err
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		n := size(m)
		s.c.mu.Lock()
		st := s.c.stats(s.name)
		st.Recv++
		st.BytesRecv += n
		s.c.mu.Unlock()
	}
	return err
}

func (c *counter) snapshot() usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(usage, len(c.m))
	for k, v := range c.m {
		out[k] = *v
	}
	return out
}

// add returns u + v.
func (u usage) add(v usage) usage {
	out := maps.Clone(u)
	if out == nil {
		out = usage{}
	}
	for k, s := range v {
		o := out[k]
		o.Calls += s.Calls
		o.Streams += s.Streams
		o.BytesSent += s.BytesSent
		o.Recv += s.Recv
		o.BytesRecv += s.BytesRecv
		o.MaxSent = max(o.MaxSent, s.MaxSent)
		out[k] = o
	}
	return out
}

// maxSent is the largest request of u, and the method that sent it.
func (u usage) maxSent() (int64, string) {
	var n int64
	var method string
	for k, s := range u {
		if s.MaxSent > n {
			n, method = s.MaxSent, k
		}
	}
	return n, method
}

// sub returns u - v (MaxSent stays u's).
func (u usage) sub(v usage) usage {
	out := maps.Clone(u)
	if out == nil {
		out = usage{}
	}
	for k, s := range v {
		o := out[k]
		o.Calls -= s.Calls
		o.Streams -= s.Streams
		o.BytesSent -= s.BytesSent
		o.Recv -= s.Recv
		o.BytesRecv -= s.BytesRecv
		out[k] = o
	}
	for k, s := range out {
		if s == (callStats{}) {
			delete(out, k)
		}
	}
	return out
}

const (
	methodKeepAlive = "Lease/LeaseKeepAlive"
	methodWatch     = "Watch/Watch"
)

// requests counts everything sent: unary calls and stream messages
// (keep-alives, watch creates and cancels).
func (u usage) requests() int64 {
	var n int64
	for _, s := range u {
		n += s.Calls
	}
	return n
}

// writes counts the requests that change etcd's data: puts, deletes,
// writing Txns, lease grants and revokes.
func (u usage) writes() int64 {
	var n int64
	for k, s := range u {
		switch k {
		case "KV/Put", "KV/DeleteRange", "KV/Txn(write)", "Lease/LeaseGrant", "Lease/LeaseRevoke":
			n += s.Calls
		}
	}
	return n
}

func (u usage) keepAlives() int64 { return u[methodKeepAlive].Calls }

func (u usage) bytesSent() int64 {
	var n int64
	for _, s := range u {
		n += s.BytesSent
	}
	return n
}

func (u usage) bytesRecv() int64 {
	var n int64
	for _, s := range u {
		n += s.BytesRecv
	}
	return n
}
