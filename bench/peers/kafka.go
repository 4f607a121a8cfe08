package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-go/baton/internal/benchproc"
)

// kafkaPeer is one member of a Kafka consumer group: a kgo client that
// consumes topic cfg.Group in group cfg.Group as a static member (its
// instance ID is cfg.ID). Partition i is item benchproc.SyncID(i). kgo runs
// the OnPartitions callbacks from its group-management goroutine at the
// moment it applies an assignment change, whether or not anyone polls, so
// the member never polls: the topic is empty and records are not the point.
type kafkaPeer struct {
	cfg   memberConfig
	own   *ownership
	cl    *kgo.Client
	sent  *kafkaCounts
	is848 bool

	joinOnce sync.Once
	joined   chan struct{} // closed once the first OnPartitionsAssigned ran
	failed   chan error    // a group error no retry can cure, before joining; cap 1

	mu     sync.Mutex // serializes drain and leave; a leaf
	left   bool       // the member has left the group for good
	closed bool       // the client is closed
}

// startKafka starts a member of cfg.System ("kafka-classic": the classic
// protocol with KIP-429 cooperative-sticky rebalancing; "kafka-848": the
// KIP-848 consumer protocol with the broker's "uniform" assignor). It
// returns once the member has joined — its first OnPartitionsAssigned
// callback has run, possibly with no partitions — and kgo is verifiably on
// the protocol cfg.System names. On error the client is closed.
//
// kgo's timing knobs, for the record: in the classic protocol a member
// learns of a rebalance only from a heartbeat response, so the heartbeat
// interval bounds how late it joins one; but kgo also sends one extra
// heartbeat 500 ms after each cooperative session begins (fixed, not
// configurable), which is what detects the second round of a KIP-429
// rebalance when the interval is longer. In KIP-848 the broker's
// group.consumer.heartbeat.interval.ms, sent back in every heartbeat
// response, replaces cfg.Heartbeat from the first response on, kgo
// heartbeats at once when it has released revoked partitions, and
// cfg.Session is not sent at all (group.consumer.session.timeout.ms
// rules).
func startKafka(ctx context.Context, cfg memberConfig, own *ownership, child *benchproc.Child) (peer, error) {
	k := &kafkaPeer{
		cfg:    cfg,
		own:    own,
		sent:   newKafkaCounts(),
		joined: make(chan struct{}),
		failed: make(chan error, 1),
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Group),
		kgo.InstanceID(cfg.ID),
		kgo.SessionTimeout(cfg.Session),
		kgo.HeartbeatInterval(cfg.Heartbeat),
		kgo.OnPartitionsAssigned(k.assigned),
		kgo.OnPartitionsRevoked(k.revoked),
		kgo.OnPartitionsLost(k.revoked),
		// kfake subscribes every client to all KIP-714 metrics every
		// 30 s; a broker without a metrics reporter asks for none.
		// Pushing them would add PushTelemetry requests that have
		// nothing to do with the group.
		kgo.DisableClientMetrics(),
		kgo.WithHooks(k.sent, k),
		kgo.WithLogger(kafkaLogger{child: child, member: cfg.ID}),
	}
	// Autocommit stays on: with nothing polled it finds nothing to
	// commit and sends no request, and OnPartitionsRevoked being ours,
	// kgo's committing default revoke is not used either.
	switch cfg.System {
	case "kafka-classic":
		opts = append(opts, kgo.Balancers(kgo.CooperativeStickyBalancer()))
	case "kafka-848":
		// kgo opts into KIP-848 only with ServerSideBalancer and a first
		// balancer of its sticky type (server assignor "uniform") or
		// range type ("range"); with any other it silently stays
		// classic. StickyBalancer is what its docs name; in v1.22.3
		// CooperativeStickyBalancer is the same type and opts in too.
		// checkProtocol catches any silent fallback.
		k.is848 = true
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.StickyBalancer()))
	default:
		return nil, fmt.Errorf("kafka: unknown system %q", cfg.System)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: member %s: new client: %w", cfg.ID, err)
	}
	k.cl = cl
	select {
	case <-k.joined:
		err = k.checkProtocol()
	case err = <-k.failed:
		err = fmt.Errorf("kafka: member %s: join group %s: %w", cfg.ID, cfg.Group, err)
	case <-ctx.Done():
		err = fmt.Errorf("kafka: member %s: join group %s: %w", cfg.ID, cfg.Group, ctx.Err())
	}
	if err != nil {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return nil, errors.Join(err, k.leave(lctx))
	}
	return k, nil
}

// checkProtocol fails unless the requests sent so far show kgo on the
// protocol cfg.System names: kgo exposes no accessor for it, but a classic
// member must send JoinGroup before any assignment, and a KIP-848 member
// never sends one, joining with ConsumerGroupHeartbeat instead. (kgo falls
// back to classic silently when the balancer does not qualify, when the
// broker lacks ConsumerGroupHeartbeat v1, or when that request is answered
// UNSUPPORTED_VERSION.)
func (k *kafkaPeer) checkProtocol() error {
	sent := k.sent.snapshot()
	joins, hbs := sent[kmsg.NameForKey(int16(kmsg.JoinGroup))], sent[kmsg.NameForKey(int16(kmsg.ConsumerGroupHeartbeat))]
	on848 := joins == 0 && hbs > 0
	if on848 == k.is848 {
		return nil
	}
	want := "classic"
	if k.is848 {
		want = "KIP-848"
	}
	return fmt.Errorf("kafka: member %s is not on the %s protocol (sent %d JoinGroup, %d ConsumerGroupHeartbeat)", k.cfg.ID, want, joins, hbs)
}

// assigned starts every partition kgo just assigned and marks the member
// joined.
func (k *kafkaPeer) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	for _, p := range m[k.cfg.Group] {
		k.own.start(benchproc.SyncID(int(p)))
	}
	k.joinOnce.Do(func() { close(k.joined) })
}

// revoked ends every partition kgo just revoked or lost.
func (k *kafkaPeer) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	for _, p := range m[k.cfg.Group] {
		k.own.end(benchproc.SyncID(int(p)))
	}
}

// OnGroupManageError implements kgo.HookGroupManageError: before the member
// has joined, an error no retry can cure fails startKafka at once (kgo
// would retry forever); any other is left to kgo.
func (k *kafkaPeer) OnGroupManageError(err error) {
	select {
	case <-k.joined:
		return
	default:
	}
	for _, fatal := range []error{
		kerr.InvalidSessionTimeout, // the session is outside group.{min,max}.session.timeout.ms
		kerr.InconsistentGroupProtocol,
		kerr.UnsupportedAssignor,
		kerr.GroupMaxSizeReached,
		kerr.GroupAuthorizationFailed,
	} {
		if errors.Is(err, fatal) {
			select {
			case k.failed <- err:
			default:
			}
			return
		}
	}
}

// drain leaves the group for good, so that its partitions move to the other
// members at once, and returns once the member owns none. A second drain
// returns nil.
func (k *kafkaPeer) drain(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("kafka: member %s: drain after leave", k.cfg.ID)
	}
	return k.leaveGroupLocked(ctx)
}

// leaveGroupLocked leaves the group for good, once; k.mu is held.
//
// kgo's own leave (LeaveGroupContext, also run by Close) first stops the
// member's group management, which runs OnPartitionsRevoked for every
// partition it owns, and then, for a static member, does not really leave:
// in the classic protocol it sends nothing (KIP-345: the partitions stay
// with the instance ID until its session times out, unless kgo owes a
// rejoin after a cooperative revoke, when it does send LeaveGroup), and in
// KIP-848 it sends ConsumerGroupHeartbeat with member epoch -2, a temporary
// departure that keeps the partitions reserved until the session times out
// or the instance returns. So once kgo's leave is done — nothing is owned
// any more — this sends the real leave itself: LeaveGroup naming the member
// ID and instance ID (classic), or ConsumerGroupHeartbeat with member epoch
// -1 and the instance ID (KIP-848, which fences the member and frees its
// instance ID). Either makes the broker reassign at once. A member the
// broker no longer knows has left already.
func (k *kafkaPeer) leaveGroupLocked(ctx context.Context) error {
	if k.left {
		return nil
	}
	if err := k.cl.LeaveGroupContext(ctx); err != nil {
		return fmt.Errorf("kafka: member %s: stop group management: %w", k.cfg.ID, err)
	}
	if n := k.own.count(); n != 0 {
		return fmt.Errorf("kafka: member %s still owns %d items after its revoke callbacks", k.cfg.ID, n)
	}
	memberID, _ := k.cl.GroupMetadata()
	if memberID == "" { // never joined: nothing to leave
		k.left = true
		return nil
	}
	var err error
	if k.is848 {
		err = k.leave848(ctx, memberID)
	} else {
		err = k.leaveClassic(ctx, memberID)
	}
	if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.GroupIDNotFound) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("kafka: member %s: leave group %s: %w", k.cfg.ID, k.cfg.Group, err)
	}
	k.left = true
	return nil
}

// leaveClassic sends a KIP-345 LeaveGroup for this static member.
func (k *kafkaPeer) leaveClassic(ctx context.Context, memberID string) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = k.cfg.Group
	req.MemberID = memberID
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = memberID
	m.InstanceID = kmsg.StringPtr(k.cfg.ID)
	m.Reason = kmsg.StringPtr("drained")
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, k.cl)
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	for _, m := range resp.Members {
		if err := kerr.ErrorForCode(m.ErrorCode); err != nil {
			return err
		}
	}
	return nil
}

// leave848 sends the KIP-848 full leave, member epoch -1, for this static
// member.
func (k *kafkaPeer) leave848(ctx context.Context, memberID string) error {
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group = k.cfg.Group
	req.MemberID = memberID
	req.MemberEpoch = -1
	req.InstanceID = kmsg.StringPtr(k.cfg.ID)
	resp, err := req.RequestWith(ctx, k.cl)
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		if resp.ErrorMessage != nil {
			return fmt.Errorf("%w: %s", err, *resp.ErrorMessage)
		}
		return err
	}
	return nil
}

// leave leaves the group as drain does, if drain has not, and closes the
// client, whose goroutines have all ended when it returns. A second leave
// returns nil.
func (k *kafkaPeer) leave(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	err := k.leaveGroupLocked(ctx)
	k.cl.Close()
	return err
}

// usage is what the member wrote to the brokers, by request name.
func (k *kafkaPeer) usage() map[string]int64 { return k.sent.snapshot() }

// kafkaCounts counts requests by kmsg request name. As a kgo
// HookBrokerWrite it counts a client's successfully written requests.
type kafkaCounts struct {
	mu sync.Mutex // a leaf
	n  map[string]int64
}

func newKafkaCounts() *kafkaCounts { return &kafkaCounts{n: map[string]int64{}} }

// add counts one request with key.
func (c *kafkaCounts) add(key int16) {
	name := kmsg.NameForKey(key)
	c.mu.Lock()
	c.n[name]++
	c.mu.Unlock()
}

// snapshot returns a copy of the counts.
func (c *kafkaCounts) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (c *kafkaCounts) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		c.add(key)
	}
}

// kafkaLogger passes kgo's warnings and errors to the parent as log lines.
type kafkaLogger struct {
	child  *benchproc.Child
	member string
}

func (kafkaLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kafkaLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l.child.Logf("%s: kgo %s: %s %v", l.member, level, msg, keyvals)
}
