package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/benchproc"
)

// The "peers" scenario compares Baton with the systems a user would pick
// instead, with one process layout for all: the store in a process of its
// own (etcd with -etcd-process, or kfake) and each member in an OS process of
// its own, so a crash is a real SIGKILL. Baton's and the baseline's members
// are this binary re-executed with -proc-member; Kafka's and the ring's are
// bench/peers' binary (a module of its own). All speak internal/benchproc's
// protocol, and their ownership events arrive here with the instant they
// happened, so one recorder measures every system.

// procMemberMain is a member in its own process: system "baton" or
// "baseline", joined as id of group, reporting ownership on stdout.
func procMemberMain(args []string) error {
	fs := flag.NewFlagSet("proc-member", flag.ContinueOnError)
	sysName := fs.String("system", "baton", "baton or baseline")
	endpoints := fs.String("endpoints", "", "etcd endpoints")
	group := fs.String("group", "", "group")
	id := fs.String("id", "", "member ID")
	ttl := fs.Duration("ttl", coordinator.DefaultTTL, "lease TTL")
	settle := fs.Duration("settle", coordinator.DefaultSettle, "Baton settle")
	inflight := fs.Int("inflight", 8, "baseline TryLocks in flight")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env := &etcdEnv{endpoints: strings.Split(*endpoints, ",")}
	var sys system
	switch *sysName {
	case "baton":
		sys = newBatonSystem(env, *ttl, *settle)
	case "baseline":
		sys = &baselineSystem{env: env, ttl: *ttl, inflight: *inflight}
	default:
		return fmt.Errorf("unknown system %q", *sysName)
	}
	child := benchproc.NewChild(os.Stdout)
	rep := &childReporter{child: child, owned: map[string]bool{}}
	return child.RunMember(os.Stdin, func() (benchproc.Member, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		m, err := sys.join(ctx, *group, *id, rep)
		if err != nil {
			return nil, err
		}
		return protoMember{m: m, rep: rep}, nil
	})
}

// protoMember drives a member by the bench's protocol.
type protoMember struct {
	m   member
	rep *childReporter
}

func (p protoMember) Status() benchproc.Status {
	return benchproc.Status{Owned: p.rep.count(), Leader: p.m.isLeader()}
}
func (p protoMember) Usage() any                      { return p.m.usage() }
func (p protoMember) Drain(ctx context.Context) error { return p.m.drain(ctx) }
func (p protoMember) Leave(ctx context.Context) error { return p.m.leave(ctx) }

// childReporter writes a member's ownership to its parent through the
// child's recorder, and counts what the member runs.
type childReporter struct {
	child *benchproc.Child

	mu    sync.Mutex // a leaf
	owned map[string]bool
}

func (r *childReporter) assign(member, sync string, token int64) {
	r.mu.Lock()
	r.owned[sync] = true
	r.mu.Unlock()
	r.child.Rec.Start(member, sync, token)
}

func (r *childReporter) revoke(member, sync string, token int64) {
	r.child.Rec.End(member, sync, token)
	r.mu.Lock()
	delete(r.owned, sync)
	r.mu.Unlock()
}

func (r *childReporter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.owned)
}

// variant is one system of the comparison with its liveness settings.
type variant struct {
	Kind      string        `json:"kind"`      // baton, baseline, kafka-classic, kafka-848, ring
	Session   time.Duration `json:"session"`   // lease TTL = session timeout = heartbeat timeout
	Heartbeat time.Duration `json:"heartbeat"` // Kafka's heartbeat interval, the ring's heartbeat period; 0 for Baton and the baseline
}

// String names the variant in tables and group names (etcd prefixes and
// Kafka topics: letters, digits and dashes only).
func (v variant) String() string {
	s := v.Kind
	if v.Heartbeat > 0 {
		s += "-hb" + v.Heartbeat.String()
	}
	return s + "-s" + v.Session.String()
}

func (v variant) isPeer() bool { return v.Kind != "baton" && v.Kind != "baseline" }

// procSystem runs a variant's members each in its own process.
type procSystem struct {
	b     *bench
	v     variant
	items int

	mu     sync.Mutex                 // a leaf
	stores map[string]*benchproc.Proc // group -> its kfake process
}

func (s *procSystem) name() string { return s.v.String() }

// exact says whether the system balances to within one item of each
// member's share (the ring does not: its shares follow random tokens).
func (s *procSystem) exact() bool { return s.v.Kind != "ring" }

func (s *procSystem) join(ctx context.Context, group, id string, tr reporter) (member, error) {
	cmd, err := s.command(ctx, group, id)
	if err != nil {
		return nil, err
	}
	t, ok := tr.(*tracker)
	if !ok {
		return nil, errors.New("procSystem: members in processes report to a tracker")
	}
	onEvent := func(l benchproc.Line) {
		switch l.Op {
		case benchproc.OpStart:
			t.assignAt(l.Member, l.Sync, l.Token, l.T)
		case benchproc.OpEnd:
			t.revokeAt(l.Member, l.Sync, l.Token, l.T)
		}
	}
	onLog := func(msg string) { s.b.logf("%s %s: %s", group, id, msg) }
	p, err := benchproc.Start(ctx, cmd, onEvent, onLog)
	if err != nil {
		return nil, fmt.Errorf("start %s %s: %w", s.v, id, err)
	}
	return &procMember{mid: id, p: p}, nil
}

// command is the member's command line.
func (s *procSystem) command(ctx context.Context, group, id string) (*exec.Cmd, error) {
	endpoints := strings.Join(s.b.env.endpoints, ",")
	if !s.v.isPeer() {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return exec.Command(exe, "-proc-member", "-system", s.v.Kind, "-endpoints", endpoints,
			"-group", group, "-id", id, "-ttl", s.v.Session.String(),
			"-settle", s.b.cfg.Settle.String(), "-inflight", fmt.Sprint(s.b.cfg.Inflight)), nil
	}
	args := []string{"member", "-system", s.v.Kind, "-id", id, "-group", group,
		"-items", fmt.Sprint(s.items), "-session", s.v.Session.String(), "-heartbeat", s.v.Heartbeat.String(),
		"-tokens", fmt.Sprint(s.b.cfg.RingTokens)}
	switch s.v.Kind {
	case "ring":
		args = append(args, "-endpoints", endpoints)
	default:
		store, err := s.store(ctx, group)
		if err != nil {
			return nil, err
		}
		args = append(args, "-brokers", store)
	}
	return exec.Command(s.b.cfg.PeersBin, args...), nil
}

// store returns the address of group's kfake cluster, started on first use
// with the variant's settings (KIP-848's heartbeat and session are the
// broker's).
func (s *procSystem) store(ctx context.Context, group string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.stores[group]
	if p == nil {
		cmd := exec.Command(s.b.cfg.PeersBin, "kfake", "-topic", group, "-partitions", fmt.Sprint(s.items),
			"-session-min", min(s.v.Session, time.Second).String(),
			"-session", s.v.Session.String(), "-heartbeat", s.v.Heartbeat.String())
		var err error
		p, err = benchproc.Start(ctx, cmd, func(benchproc.Line) {}, func(msg string) { s.b.logf("kfake %s: %s", group, msg) })
		if err != nil {
			return "", fmt.Errorf("start kfake for %s: %w", group, err)
		}
		if s.stores == nil {
			s.stores = map[string]*benchproc.Proc{}
		}
		s.stores[group] = p
	}
	var ready struct {
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal(p.Ready, &ready); err != nil || ready.Addr == "" {
		return "", fmt.Errorf("kfake for %s: no address in %s", group, p.Ready)
	}
	return ready.Addr, nil
}

// storeUsage is what the store received for group so far, by request kind:
// kfake counts for Kafka; nil for systems on etcd (read etcd's counters).
func (s *procSystem) storeUsage(ctx context.Context, group string) (map[string]int64, error) {
	s.mu.Lock()
	p := s.stores[group]
	s.mu.Unlock()
	if p == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var u map[string]int64
	err := p.Ask(ctx, benchproc.CmdUsage, &u)
	return u, err
}

// closeGroup stops group's store, if it has one of its own.
func (s *procSystem) closeGroup(group string) {
	s.mu.Lock()
	p := s.stores[group]
	delete(s.stores, group)
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		p.Kill()
		<-p.Done()
	}
}

// procMember is a member in its own process.
type procMember struct {
	mid string
	p   *benchproc.Proc
}

func (m *procMember) id() string { return m.mid }

func (m *procMember) drain(ctx context.Context) error {
	return m.p.Ask(ctx, benchproc.CmdDrain, nil)
}

func (m *procMember) leave(ctx context.Context) error {
	err := m.p.Ask(ctx, benchproc.CmdLeave, nil)
	m.p.Close()
	return err
}

// crash kills the process: SIGKILL, no goodbye.
func (m *procMember) crash() { m.p.Kill() }

func (m *procMember) stopped() <-chan struct{} { return m.p.Done() }

// isLeader asks the member. One that does not answer counts as a leader, so
// it is never taken for a non-leader (the kill victim).
func (m *procMember) isLeader() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st benchproc.Status
	if err := m.p.Ask(ctx, benchproc.CmdStatus, &st); err != nil {
		return true
	}
	return st.Leader
}

// usage is what the member counted itself: calls by method (Baton and the
// baseline: every etcd request; Kafka: every request to a broker; the ring:
// nothing, etcd counts it).
func (m *procMember) usage() usage {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := m.p.Ask(ctx, benchproc.CmdUsage, &raw); err != nil || len(raw) == 0 || string(raw) == "null" {
		return usage{}
	}
	var u usage
	if err := json.Unmarshal(raw, &u); err == nil {
		return u
	}
	var calls map[string]int64
	if err := json.Unmarshal(raw, &calls); err != nil {
		return usage{}
	}
	u = usage{}
	for k, n := range calls {
		u[k] = callStats{Calls: n}
	}
	return u
}
