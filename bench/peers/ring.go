package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/kv/etcd"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"

	"github.com/baton-go/baton/internal/benchproc"
)

// ringName names the ring in dskit's logs; ringKey is the ring's key in
// etcd, under the member's prefix (cfg.Group + "/").
const (
	ringName = "peers"
	ringKey  = "ring"
)

// ringPeer is one member of a dskit hash ring stored in etcd. It owns item i
// while the ring's first healthy ACTIVE instance clockwise from the item's
// hash is its own instance.
type ringPeer struct {
	id    string
	own   *ownership
	items []string // benchproc.SyncID(i)
	hash  []uint32 // hash[i] is items[i]'s token

	lc       *ring.BasicLifecycler // this member's instance in the ring
	ring     *ring.Ring            // the ring client: a copy of the ring, kept by an etcd watch
	changed  chan struct{}         // capacity 1: the ring client applied an update
	live     chan struct{}         // closed once the ring client applied its first watched update
	liveOnce sync.Once
	period   time.Duration // recompute at least this often: health is time-based

	stop context.CancelFunc // ends run
	wg   sync.WaitGroup     // run

	mu      sync.Mutex // held while ownership is recomputed; ownership's lock is taken under it
	leaving bool       // drain began: nothing is ours any more
	// Lookup buffers, reused under mu.
	bufDescs          []ring.InstanceDesc
	bufHosts, bufZone []string
}

// startRing joins the ring stored in etcd at cfg.Endpoints under the key
// prefix cfg.Group + "/" as instance cfg.ID with cfg.Tokens random tokens,
// ACTIVE at once. It returns once the instance is registered, this
// member's first ownership is in own and its ring client is watching.
// ctx bounds only the start: the member runs until leave.
func startRing(ctx context.Context, cfg memberConfig, own *ownership, _ *benchproc.Child) (peer, error) {
	if len(cfg.Endpoints) == 0 || cfg.Tokens < 1 || cfg.Heartbeat <= 0 || cfg.Session <= 0 {
		return nil, errors.New("ring: -endpoints, -tokens ≥ 1, -heartbeat > 0 and -session > 0 are required")
	}
	logger := log.With(level.NewFilter(log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr)), level.AllowWarn()), "member", cfg.ID)

	var etcdCfg etcd.Config
	flagext.DefaultValues(&etcdCfg) // a zero MaxRetries would make every CAS fail untried
	etcdCfg.Endpoints = cfg.Endpoints
	// dskit's etcd client has no Close: it lives as long as the process.
	store, err := kv.NewClient(kv.Config{
		Store:       "etcd",
		Prefix:      cfg.Group + "/",
		StoreConfig: kv.StoreConfig{Etcd: etcdCfg},
	}, ring.GetCodec(), nil, logger)
	if err != nil {
		return nil, fmt.Errorf("ring: etcd client: %w", err)
	}

	p := &ringPeer{
		id:      cfg.ID,
		own:     own,
		items:   make([]string, cfg.Items),
		hash:    make([]uint32, cfg.Items),
		changed: make(chan struct{}, 1),
		live:    make(chan struct{}),
		period:  cfg.Heartbeat,
	}
	for i := range cfg.Items {
		p.items[i] = benchproc.SyncID(i)
		p.hash[i] = itemToken(p.items[i])
	}
	p.bufDescs, p.bufHosts, p.bufZone = ring.MakeBuffersForGet()

	// Replication factor 1; the strategy that keeps any healthy instance
	// (the default one wants a quorum of the replica set, which one LEAVING
	// instance in a set of two breaks) and allows the per-call replication
	// factor of owner's fallback.
	p.ring, err = ring.NewWithStoreClientAndStrategy(ring.Config{
		HeartbeatTimeout:     cfg.Session,
		ReplicationFactor:    1,
		SubringCacheDisabled: true,
	}, ringName, ringKey, notifyingStore{store, p.applied}, ring.NewIgnoreUnhealthyInstancesReplicationStrategy(), nil, logger)
	if err != nil {
		return nil, fmt.Errorf("ring: ring client: %w", err)
	}

	// Register ACTIVE with new tokens (no observe period, no token file),
	// forget instances silent for 2×Session at each heartbeat, and on stop
	// switch to LEAVING and then unregister.
	var delegate ring.BasicLifecyclerDelegate = ring.NewInstanceRegisterDelegate(ring.ACTIVE, cfg.Tokens)
	delegate = ring.NewAutoForgetDelegate(2*cfg.Session, delegate, logger)
	delegate = ring.NewLeaveOnStoppingDelegate(delegate, logger)
	p.lc, err = ring.NewBasicLifecycler(ring.BasicLifecyclerConfig{
		ID:               cfg.ID,
		Addr:             cfg.ID, // nothing is served: it only names the instance in dskit's messages
		HeartbeatPeriod:  cfg.Heartbeat,
		HeartbeatTimeout: cfg.Session,
		NumTokens:        cfg.Tokens,
	}, ringName, ringKey, store, delegate, logger, nil)
	if err != nil {
		return nil, fmt.Errorf("ring: lifecycler: %w", err)
	}

	if err := p.start(ctx); err != nil {
		// ctx may have ended: give leaving a time of its own.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return nil, errors.Join(err, p.leave(lctx))
	}
	return p, nil
}

// start registers the instance, starts the ring client, waits until the
// client sees the instance ACTIVE, computes the first ownership, starts
// run, and waits until the client's watch is live. The services get a
// context of their own: ctx bounds only the waits.
func (p *ringPeer) start(ctx context.Context) error {
	// The lifecycler first, so the ring client's first read holds the
	// instance.
	if err := p.lc.StartAsync(context.Background()); err != nil {
		return fmt.Errorf("ring: start lifecycler: %w", err)
	}
	if err := p.lc.AwaitRunning(ctx); err != nil {
		return fmt.Errorf("ring: register %s: %w", p.id, err)
	}
	if err := p.ring.StartAsync(context.Background()); err != nil {
		return fmt.Errorf("ring: start ring client: %w", err)
	}
	if err := p.ring.AwaitRunning(ctx); err != nil {
		return fmt.Errorf("ring: read the ring: %w", err)
	}
	if err := ring.WaitInstanceState(ctx, p.ring, p.id, ring.ACTIVE); err != nil {
		return fmt.Errorf("ring: wait for %s to be ACTIVE: %w", p.id, err)
	}
	p.recompute()
	rctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.wg.Go(func() { p.run(rctx) })
	// The client read the ring, then started watching from whatever
	// revision etcd had by then: a write in between (another member
	// joining) is missed until the next one. Every member heartbeats, so an
	// update comes within a heartbeat period, and it carries the whole
	// ring; until then this member is not ready.
	select {
	case <-p.live:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ring: wait for the ring client's first update: %w", ctx.Err())
	}
}

// run recomputes ownership each time the ring client applies an update
// (every heartbeat of every member is one) and at least every period, for
// health changes no write announces (a killed member's heartbeat ageing
// past the timeout). It returns when ctx ends.
func (p *ringPeer) run(ctx context.Context) {
	t := time.NewTicker(p.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.changed:
		case <-t.C:
		}
		p.recompute()
	}
}

// recompute brings own in step with the ring client's view, unless drain
// has begun.
func (p *ringPeer) recompute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leaving {
		return
	}
	for i, item := range p.items {
		if p.owner(p.hash[i]) == p.id {
			p.own.start(item)
		} else {
			p.own.end(item)
		}
	}
}

// owner is the ID of the first instance clockwise from token that is
// ACTIVE and heartbeat-healthy, or "" if there is none. It is called
// under mu.
func (p *ringPeer) owner(token uint32) string {
	// ring.Write extends the walk past instances that are not ACTIVE, so
	// it stops at the first ACTIVE one; the strategy then drops it if its
	// heartbeat is too old.
	rs, err := p.ring.Get(token, ring.Write, p.bufDescs, p.bufHosts, p.bufZone)
	if err != nil {
		// Extension looks only at states, never at heartbeats: past a
		// silent ACTIVE instance, walk the whole ring (a replication
		// factor of every instance) and take the first healthy one. The
		// strategy keeps the walk's order.
		rs, err = p.ring.GetWithOptions(token, ring.WriteNoExtend,
			ring.WithBuffers(p.bufDescs, p.bufHosts, p.bufZone),
			ring.WithReplicationFactor(p.ring.InstancesCount()))
	}
	if err != nil || len(rs.Instances) == 0 {
		return ""
	}
	return rs.Instances[0].Id
}

// drain ends every item this member owns, then stops the lifecycler, which
// switches the instance to LEAVING and unregisters it. It returns once the
// instance is out of the ring; nothing is owned from its start on.
func (p *ringPeer) drain(ctx context.Context) error {
	p.mu.Lock()
	p.leaving = true
	for _, item := range p.own.items() {
		p.own.end(item)
	}
	p.mu.Unlock()
	if err := services.StopAndAwaitTerminated(ctx, p.lc); err != nil {
		return fmt.Errorf("ring: leave the ring: %w", err)
	}
	return nil
}

// leave drains (if drain has not), then stops run and the ring client. Once
// it returns nil, every goroutine of this member has ended but dskit's
// etcd client's. Calling it again is harmless.
func (p *ringPeer) leave(ctx context.Context) error {
	err := p.drain(ctx)
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
	if serr := services.StopAndAwaitTerminated(ctx, p.ring); serr != nil {
		err = errors.Join(err, fmt.Errorf("ring: stop ring client: %w", serr))
	}
	return err
}

// usage is nil: dskit makes its own etcd client, so only the store counts.
func (p *ringPeer) usage() map[string]int64 { return nil }

// itemToken hashes an item's name onto the ring: 32-bit FNV-1a, as dskit's
// users hash tenant IDs and block IDs, then murmur3's finalizer. FNV-1a
// alone leaves names that differ in their last digits in a few narrow arcs
// (sync-00000 to sync-00059 fall in four arcs covering a fifth of the
// ring), which would make the ring's split look lopsided for a reason that
// is the names', not the ring's.
func itemToken(item string) uint32 {
	f := fnv.New32a()
	_, _ = f.Write([]byte(item))
	h := f.Sum32()
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// applied is told that the ring client applied an update from its watch:
// it marks the watch live and wakes run (a wake already pending absorbs
// it).
func (p *ringPeer) applied() {
	p.liveOnce.Do(func() { close(p.live) })
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// notifyingStore is the ring client's store: it calls applied after the
// client's callback for each update its watch delivers. The ring client has
// no change callback of its own.
type notifyingStore struct {
	kv.Client
	applied func()
}

// WatchKey is the store's WatchKey with f followed by applied.
func (s notifyingStore) WatchKey(ctx context.Context, key string, f func(any) bool) {
	s.Client.WatchKey(ctx, key, func(v any) bool {
		more := f(v)
		s.applied()
		return more
	})
}
