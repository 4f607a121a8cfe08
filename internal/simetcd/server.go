// Package simetcd is an etcd in one process for the simulator: etcd's own
// storage engine (mvcc, the lessor, and etcdserver/txn's apply code) behind
// the gRPC client interfaces clientv3 runs on, with no raft and no network.
//
// A Server holds the data; Server.Client gives a real *clientv3.Client whose
// KV, Lease and Watcher go through a Conn, where faults are injected:
// requests delayed, refused, applied with their answer lost, or held until
// their context ends, and watch streams broken. clientv3's own request,
// keep-alive and watch code runs unchanged on top, so the library under test
// runs unchanged too.
//
// Time is the caller's: inside a testing/synctest bubble the Server's lease
// expiry, mvcc's watcher loops and the backend's batch commits all run in
// virtual time. The Server never waits on a channel while it holds its lock
// (a bubble would hang instead of failing).
//
// What it does not model: raft (one member, always leader unless LoseLeader),
// member lists, auth, gRPC's own retries and keepalives, fragmented watch
// responses, and process pauses. internal/etcdconformance checks it against
// real etcd.
package simetcd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/coreos/go-semver/semver"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	etcderrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config sets a Server's limits. Zero values take etcd's defaults.
type Config struct {
	// Dir holds the backend's file; required (a test's t.TempDir()).
	Dir string
	// MinLeaseTTL is the smallest TTL granted, in seconds: 2 on an etcd with
	// default timings, 1 on the integration framework's clusters.
	MinLeaseTTL int64
	// MaxTxnOps is etcd's --max-txn-ops (128).
	MaxTxnOps int
	// MaxRequestBytes is etcd's --max-request-bytes (1.5 MiB).
	MaxRequestBytes int
	// Logger, if set, gets the storage engine's logs.
	Logger *zap.Logger
	// OnExpire, if set, is called with each lease the Server revokes
	// because it expired, once its keys are deleted. It must not call
	// the Server, nor wait for anything the caller of Close may hold:
	// Close waits for an OnExpire under way.
	OnExpire func(lease int64)
}

// Server is one etcd member that is always the raft leader (unless
// LoseLeader says otherwise). Its methods serve the gRPC requests of every
// Conn.
type Server struct {
	cfg Config
	lg  *zap.Logger
	be  backend.Backend
	le  lease.Lessor
	kv  mvcc.WatchableKV

	// mu applies one request at a time, as raft's apply loop does: etcd's
	// Txn compares and then writes in two steps that only the apply loop
	// keeps atomic. It is a leaf lock, never held across a channel wait.
	mu        sync.Mutex
	nextLease int64
	leaderC   chan struct{} // closed while there is a leader; replaced when lost
	noLeader  bool
	streams   map[*stream]struct{}     // open watch and keep-alive streams
	early     map[lease.LeaseID]*early // leases granted through a slow-clock Conn (skew.go)

	stop chan struct{}
	wg   sync.WaitGroup
	// expiring is held for reading by an early expiry (skew.go) from its
	// check of stop until its OnExpire has returned, so that Close can wait
	// for those under way. Taken before mu, never while mu is held.
	expiring sync.RWMutex
}

// clusterVersion gives the lessor the cluster version it asks for.
type clusterVersion struct{}

func (clusterVersion) Version() *semver.Version { return &version.V3_6 }

// Fixed header fields: one cluster of one member in one term.
const (
	clusterID = 0x5133
	memberID  = 0xba70
	raftTerm  = 2
)

// New starts a Server on an empty store.
func New(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("simetcd: Config.Dir is required")
	}
	if cfg.MinLeaseTTL == 0 {
		cfg.MinLeaseTTL = 2
	}
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = 128
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = 1536 * 1024
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	bcfg := backend.DefaultBackendConfig(lg)
	bcfg.Path = filepath.Join(cfg.Dir, "simetcd.db")
	bcfg.UnsafeNoFsync = true
	be := backend.New(bcfg)
	le := lease.NewLessor(lg, be, clusterVersion{}, lease.LessorConfig{MinLeaseTTL: cfg.MinLeaseTTL})
	s := &Server{
		cfg:       cfg,
		lg:        lg,
		be:        be,
		le:        le,
		kv:        mvcc.New(lg, be, le, mvcc.StoreConfig{}),
		nextLease: 0x7a5e0000,
		leaderC:   make(chan struct{}),
		streams:   map[*stream]struct{}{},
		early:     map[lease.LeaseID]*early{},
		stop:      make(chan struct{}),
	}
	close(s.leaderC)
	le.Promote(0)
	s.wg.Add(1)
	go s.expire()
	return s, nil
}

// Close stops the Server: open streams end, and every goroutine it started
// has returned when Close does.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.stop:
		s.mu.Unlock()
		return
	default:
	}
	close(s.stop)
	for id := range s.early {
		s.forget(id)
	}
	var open []*stream
	for st := range s.streams {
		open = append(open, st)
	}
	s.mu.Unlock()
	// An early expiry that got past its check of stop before it closed
	// calls OnExpire still: wait for it, so none comes after Close.
	s.expiring.Lock()
	s.expiring.Unlock() //lint:ignore SA2001 an empty critical section: a barrier
	for _, st := range open {
		st.close(rpctypes.ErrGRPCStopped)
	}
	s.wg.Wait()
	s.le.Stop()
	_ = s.kv.Close()
	_ = s.be.Close()
}

// expire revokes the leases the lessor finds expired, as the leader does
// through raft.
func (s *Server) expire() {
	defer s.wg.Done()
	for {
		select {
		case ls := <-s.le.ExpiredLeasesC():
			for _, l := range ls {
				s.mu.Lock()
				revoked := !s.noLeader && s.le.Revoke(l.ID) == nil
				if revoked {
					s.forget(l.ID)
				}
				s.mu.Unlock()
				if revoked && s.cfg.OnExpire != nil {
					s.cfg.OnExpire(int64(l.ID))
				}
			}
		case <-s.stop:
			return
		}
	}
}

// Rev is the store's current revision.
func (s *Server) Rev() int64 { return s.kv.Rev() }

// LoseLeader makes the member lose its leader until the returned func is
// called: writes, linearizable reads and lease requests wait for a leader
// (or their ctx), leases do not expire, and streams opened with
// clientv3.WithRequireLeader end with rpctypes.ErrGRPCNoLeader, as etcd's
// leader monitor does. On regaining a leader the lessor extends every lease
// by its TTL, as a new raft leader does.
func (s *Server) LoseLeader() (restore func()) {
	s.mu.Lock()
	if s.noLeader {
		s.mu.Unlock()
		return func() {}
	}
	s.noLeader = true
	s.leaderC = make(chan struct{})
	s.le.Demote()
	var open []*stream
	for st := range s.streams {
		if st.requireLeader {
			open = append(open, st)
		}
	}
	s.mu.Unlock()
	for _, st := range open {
		st.close(rpctypes.ErrGRPCNoLeader)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.noLeader = false
			s.le.Promote(0)
			s.extendEarly()
			close(s.leaderC)
		})
	}
}

// waitLeader waits until the member has a leader, ctx ends or the Server
// stops.
func (s *Server) waitLeader(ctx context.Context) error {
	s.mu.Lock()
	c, lost := s.leaderC, s.noLeader
	s.mu.Unlock()
	if lost && requiresLeader(ctx) {
		// etcd's interceptor refuses such a request at once.
		return rpctypes.ErrGRPCNoLeader
	}
	select {
	case <-s.stop:
		return rpctypes.ErrGRPCStopped
	default:
	}
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return rpctypes.ErrGRPCStopped
	}
}

// lock takes s.mu for one apply, unless the Server has stopped (its store
// is closed then).
func (s *Server) lock() error {
	s.mu.Lock()
	select {
	case <-s.stop:
		s.mu.Unlock()
		return rpctypes.ErrGRPCStopped
	default:
		return nil
	}
}

func (s *Server) header(rev int64) *pb.ResponseHeader {
	if rev == 0 {
		rev = s.kv.Rev()
	}
	return &pb.ResponseHeader{ClusterId: clusterID, MemberId: memberID, Revision: rev, RaftTerm: raftTerm}
}

// grpcOverheadBytes is what etcd adds to --max-request-bytes for gRPC's
// own limit on a received message.
const grpcOverheadBytes = 512 * 1024

// tooLarge is etcd's check of a proposal's size against --max-request-bytes,
// and before it gRPC's limit on the message.
func (s *Server) tooLarge(m proto.Message) error {
	n := proto.Size(m)
	if n > s.cfg.MaxRequestBytes+grpcOverheadBytes {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, s.cfg.MaxRequestBytes+grpcOverheadBytes)
	}
	// A raft proposal wraps the request with a header of a few bytes.
	if n+16 > s.cfg.MaxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

// toGRPC maps the storage engine's errors to the ones etcd's gRPC layer
// returns.
func toGRPC(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mvcc.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, mvcc.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	case errors.Is(err, lease.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, lease.ErrLeaseExists):
		return rpctypes.ErrGRPCLeaseExist
	case errors.Is(err, lease.ErrLeaseTTLTooLarge):
		return rpctypes.ErrGRPCLeaseTTLTooLarge
	case errors.Is(err, etcderrors.ErrKeyNotFound):
		return rpctypes.ErrGRPCKeyNotFound
	case errors.Is(err, etcderrors.ErrRequestTooLarge):
		return rpctypes.ErrGRPCRequestTooLarge
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("simetcd: %w", err)
}

// applyCtx is the context writes are applied with: like raft's apply loop,
// an apply does not stop because the client gave up (etcd's apply code
// panics on an error inside a Txn with writes).
var applyCtx = context.Background()

// Range serves a RangeRequest.
func (s *Server) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	return serve(s, ctx, !r.Serializable, func() (*pb.RangeResponse, error) {
		resp, _, err := txn.Range(ctx, s.lg, s.kv, r, true)
		return resp, err
	})
}

// Put serves a PutRequest.
func (s *Server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	if err := s.tooLarge(r); err != nil {
		return nil, err
	}
	return serve(s, ctx, writes, func() (*pb.PutResponse, error) {
		resp, _, err := txn.Put(applyCtx, s.lg, s.le, s.kv, r)
		return resp, err
	})
}

// DeleteRange serves a DeleteRangeRequest.
func (s *Server) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if len(r.Key) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	if err := s.tooLarge(r); err != nil {
		return nil, err
	}
	return serve(s, ctx, writes, func() (*pb.DeleteRangeResponse, error) {
		resp, _, err := txn.DeleteRange(applyCtx, s.lg, s.kv, r)
		return resp, err
	})
}

// Txn serves a TxnRequest.
func (s *Server) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, s.cfg.MaxTxnOps); err != nil {
		return nil, err
	}
	if _, _, err := checkOverlaps(r.Success); err != nil {
		return nil, err
	}
	if _, _, err := checkOverlaps(r.Failure); err != nil {
		return nil, err
	}
	readOnly := txn.IsTxnReadonly(r)
	if !readOnly {
		if err := s.tooLarge(r); err != nil {
			return nil, err
		}
	}
	return serve(s, ctx, !txn.IsTxnSerializable(r), func() (*pb.TxnResponse, error) {
		resp, _, err := txn.Txn(applyCtx, s.lg, r, false, s.kv, s.le, false)
		return resp, err
	})
}

// writes says to serve that a request needs a leader, as every write does.
const writes = true

// serve runs apply under the server's lock, once a request that needs a
// leader (linearizable reads, writes) has one, and fills in the response
// header.
func serve[R interface{ GetHeader() *pb.ResponseHeader }](s *Server, ctx context.Context, needsLeader bool, apply func() (R, error)) (R, error) {
	var none R
	if needsLeader {
		if err := s.waitLeader(ctx); err != nil {
			return none, err
		}
	}
	if err := s.lock(); err != nil {
		return none, err
	}
	defer s.mu.Unlock()
	resp, err := apply()
	if err != nil {
		return none, toGRPC(err)
	}
	s.fill(resp.GetHeader())
	return resp, nil
}

// Compact serves a CompactionRequest.
func (s *Server) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	done, err := s.kv.Compact(traceutil.TODO(), r.Revision)
	rev := s.kv.Rev()
	s.mu.Unlock()
	if err != nil {
		return nil, toGRPC(err)
	}
	if r.Physical {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &pb.CompactionResponse{Header: s.header(rev)}, nil
}

// fill completes a header the apply code left with only a revision.
func (s *Server) fill(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	h.ClusterId, h.MemberId, h.RaftTerm = clusterID, memberID, raftTerm
	if h.Revision == 0 {
		h.Revision = s.kv.Rev()
	}
}

// LeaseGrant serves a LeaseGrantRequest.
func (s *Server) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return s.grant(ctx, r, 0)
}

// grant grants a lease whose holder's clock runs slow by slow (see skew.go).
func (s *Server) grant(ctx context.Context, r *pb.LeaseGrantRequest, slow float64) (*pb.LeaseGrantResponse, error) {
	if err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	id := r.ID
	if id == 0 {
		s.nextLease++
		id = s.nextLease
	}
	l, err := s.le.Grant(lease.LeaseID(id), r.TTL)
	if err != nil {
		return nil, toGRPC(err)
	}
	s.skew(l.ID, l.TTL(), slow)
	return &pb.LeaseGrantResponse{Header: s.header(0), ID: int64(l.ID), TTL: l.TTL()}, nil
}

// LeaseRevoke serves a LeaseRevokeRequest.
func (s *Server) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	s.forget(lease.LeaseID(r.ID))
	if err := s.le.Revoke(lease.LeaseID(r.ID)); err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseRevokeResponse{Header: s.header(0)}, nil
}

// LeaseTimeToLive serves a LeaseTimeToLiveRequest: TTL -1 for a lease that
// does not exist, as etcd answers.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	l := s.le.Lookup(lease.LeaseID(r.ID))
	if l == nil {
		return &pb.LeaseTimeToLiveResponse{Header: s.header(0), ID: r.ID, TTL: -1}, nil
	}
	resp := &pb.LeaseTimeToLiveResponse{
		Header:     s.header(0),
		ID:         r.ID,
		TTL:        int64(l.Remaining().Seconds()), // etcd truncates
		GrantedTTL: l.TTL(),
	}
	if r.Keys {
		for _, item := range l.Keys() {
			resp.Keys = append(resp.Keys, []byte(item))
		}
	}
	return resp, nil
}

// LeaseLeases serves a LeaseLeasesRequest.
func (s *Server) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	resp := &pb.LeaseLeasesResponse{Header: s.header(0), Leases: []*pb.LeaseStatus{}}
	for _, l := range s.le.Leases() {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: int64(l.ID)})
	}
	return resp, nil
}

// renew is one keep-alive: the TTL, or 0 for a lease that does not exist.
// It may wait for an expired lease's revocation, so it never holds s.mu.
func (s *Server) renew(ctx context.Context, id int64) (*pb.LeaseKeepAliveResponse, error) {
	if err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	resp := &pb.LeaseKeepAliveResponse{ID: id, Header: s.header(0)}
	if err := s.lock(); err != nil {
		return nil, err
	}
	expired := s.revokeIfDue(lease.LeaseID(id))
	s.mu.Unlock()
	if expired {
		if s.cfg.OnExpire != nil {
			s.cfg.OnExpire(id)
		}
		return resp, nil // TTL 0: not found
	}
	ttl, err := s.le.Renew(lease.LeaseID(id))
	if err == nil {
		if err := s.lock(); err != nil {
			return nil, err
		}
		if !s.renewed(lease.LeaseID(id), ttl) {
			ttl = 0
		}
		s.mu.Unlock()
	}
	switch {
	case errors.Is(err, lease.ErrLeaseNotFound):
		ttl = 0
	case errors.Is(err, lease.ErrNotPrimary):
		return nil, rpctypes.ErrGRPCNoLeader
	case err != nil:
		return nil, toGRPC(err)
	}
	resp.TTL = ttl
	return resp, nil
}
