package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-go/baton/internal/benchproc"
	"github.com/baton-go/baton/internal/recorder"
)

const kafkaTestItems = 30

// kafkaTestMember is one member of a test group.
type kafkaTestMember struct {
	id  string
	rec *recorder.Recorder
	own *ownership
	p   peer
}

// TestKafkaGroup runs a group of three members on each protocol, adds a
// fourth, drains it, and checks that every item always ends up owned by
// exactly one member and that no two ownership intervals overlap.
func TestKafkaGroup(t *testing.T) {
	for _, system := range []string{"kafka-classic", "kafka-848"} {
		t.Run(system, func(t *testing.T) { testKafkaGroup(t, system) })
	}
}

func testKafkaGroup(t *testing.T, system string) {
	goroutines := runtime.NumGoroutine()
	const session, heartbeat = 2 * time.Second, 100 * time.Millisecond
	c, _, err := newKfake(kfakeConfig{
		Topic:      "g",
		Partitions: kafkaTestItems,
		SessionMin: time.Second,
		Heartbeat:  heartbeat,
		Session:    session,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var members []*kafkaTestMember
	start := func(id string) *kafkaTestMember {
		t.Helper()
		m := &kafkaTestMember{id: id, rec: recorder.New()}
		m.own = newOwnership(id, m.rec)
		cfg := memberConfig{
			System:    system,
			ID:        id,
			Group:     "g",
			Items:     kafkaTestItems,
			Session:   session,
			Heartbeat: heartbeat,
			Brokers:   c.ListenAddrs(),
		}
		p, err := startKafka(ctx, cfg, m.own, benchproc.NewChild(io.Discard))
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		m.p = p
		t.Cleanup(func() { _ = m.p.leave(context.Background()) })
		members = append(members, m)
		return m
	}

	for i := range 3 {
		start(fmt.Sprintf("m%d", i))
	}
	kafkaEventually(t, "3 members own every item once", func() error { return kafkaOwnedOnce(members, members) })

	fourth := start("m3")
	kafkaEventually(t, "4 members own every item once", func() error { return kafkaOwnedOnce(members, members) })

	if err := fourth.p.drain(ctx); err != nil {
		t.Fatalf("drain m3: %v", err)
	}
	if n := fourth.own.count(); n != 0 {
		t.Fatalf("m3 owns %d items after its drain", n)
	}
	if err := fourth.p.drain(ctx); err != nil {
		t.Fatalf("second drain of m3: %v", err)
	}
	kafkaEventually(t, "the other 3 own every item once", func() error { return kafkaOwnedOnce(members, members[:3]) })

	// m3 may drain before its first heartbeat: it can get free partitions
	// in its first assignment.
	used := fourth.p.usage()
	if system == "kafka-classic" {
		if used["JoinGroup"] == 0 || used["SyncGroup"] == 0 || used["LeaveGroup"] != 1 || used["ConsumerGroupHeartbeat"] != 0 {
			t.Errorf("m3 sent %v; want JoinGroup, SyncGroup, one LeaveGroup and no ConsumerGroupHeartbeat", used)
		}
	} else if used["ConsumerGroupHeartbeat"] < 3 || used["JoinGroup"]+used["SyncGroup"]+used["Heartbeat"]+used["LeaveGroup"] != 0 {
		// At least the join, the static leave (epoch -2) and the leave
		// (epoch -1).
		t.Errorf("m3 sent %v; want 3 or more ConsumerGroupHeartbeat and none of the classic group requests", used)
	}

	for _, m := range members {
		if err := m.p.leave(ctx); err != nil {
			t.Errorf("leave %s: %v", m.id, err)
		}
	}
	if err := fourth.p.leave(ctx); err != nil {
		t.Errorf("second leave of m3: %v", err)
	}
	recs := make([]*recorder.Recorder, len(members))
	for i, m := range members {
		recs[i] = m.rec
	}
	if err := recorder.Merge(recs...).Check(); err != nil {
		t.Errorf("ownership record: %v", err)
	}

	c.Close()
	kafkaEventually(t, "goroutines end", func() error {
		if n := runtime.NumGoroutine(); n > goroutines+2 {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

// kafkaOwnedOnce fails unless each item is owned by exactly one of members,
// one of owners, and each of owners owns some.
func kafkaOwnedOnce(members, owners []*kafkaTestMember) error {
	allowed := map[string]bool{}
	for _, m := range owners {
		allowed[m.id] = true
	}
	owner := map[string]string{}
	for _, m := range members {
		for _, it := range m.own.items() {
			if prev, ok := owner[it]; ok {
				return fmt.Errorf("%s owned by %s and %s", it, prev, m.id)
			}
			if !allowed[m.id] {
				return fmt.Errorf("%s owned by %s", it, m.id)
			}
			owner[it] = m.id
		}
	}
	for _, m := range owners {
		if m.own.count() == 0 {
			return fmt.Errorf("%s owns nothing", m.id)
		}
	}
	for i := range kafkaTestItems {
		if _, ok := owner[benchproc.SyncID(i)]; !ok {
			return fmt.Errorf("%s owned by nobody", benchproc.SyncID(i))
		}
	}
	if len(owner) != kafkaTestItems {
		return fmt.Errorf("%d items owned, want %d", len(owner), kafkaTestItems)
	}
	return nil
}

// kafkaEventually polls cond until it returns nil, and fails the test with
// its last error if that takes over 15 seconds.
func kafkaEventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKafkaSessionBelowMinimum checks that a classic member whose session
// timeout the broker refuses fails to start at once rather than retrying
// until its context ends.
func TestKafkaSessionBelowMinimum(t *testing.T) {
	c, _, err := newKfake(kfakeConfig{Topic: "g", Partitions: 3, SessionMin: 6 * time.Second, Heartbeat: time.Second, Session: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cfg := memberConfig{System: "kafka-classic", ID: "m0", Group: "g", Items: 3, Session: 2 * time.Second, Heartbeat: 100 * time.Millisecond, Brokers: c.ListenAddrs()}
	p, err := startKafka(ctx, cfg, newOwnership("m0", recorder.New()), benchproc.NewChild(io.Discard))
	if !errors.Is(err, kerr.InvalidSessionTimeout) {
		if p != nil {
			_ = p.leave(ctx)
		}
		t.Fatalf("startKafka: %v; want %v", err, kerr.InvalidSessionTimeout)
	}
}

// TestKafkaKfakeMain drives the store process's loop over pipes: ready with
// the address, request counts, an error for an unknown command, and a clean
// end when stdin ends.
func TestKafkaKfakeMain(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runKfake([]string{"-topic", "t", "-partitions", "3", "-session-min", "1s", "-heartbeat", "100ms", "-session", "2s"}, inR, outW)
		outW.Close()
	}()
	lines := bufio.NewScanner(outR)
	read := func() benchproc.Line {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no line from runKfake: %v", lines.Err())
		}
		var l benchproc.Line
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		return l
	}

	ready := read()
	var body struct{ Addr string }
	if err := json.Unmarshal(ready.Body, &body); ready.Op != benchproc.OpReady || ready.Err != "" || err != nil || body.Addr == "" {
		t.Fatalf("ready line %+v (%v)", ready, err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(body.Addr), kgo.DisableClientMetrics())
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("t")
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(t.Context(), cl)
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 3 {
		t.Fatalf("metadata of t: %+v", resp.Topics)
	}

	fmt.Fprintln(inW, benchproc.CmdUsage)
	reply := read()
	var used map[string]int64
	if err := json.Unmarshal(reply.Body, &used); reply.Op != benchproc.OpReply || reply.Err != "" || err != nil {
		t.Fatalf("usage reply %+v (%v)", reply, err)
	}
	if used["ApiVersions"] == 0 || used["Metadata"] == 0 {
		t.Errorf("usage %v; want ApiVersions and Metadata", used)
	}

	fmt.Fprintln(inW, "bogus")
	if reply := read(); reply.Op != benchproc.OpReply || reply.Err == "" {
		t.Errorf("reply to bogus: %+v; want an error", reply)
	}

	inW.Close()
	if err := <-done; err != nil {
		t.Errorf("runKfake: %v", err)
	}
}

// TestKafkaKfakeConfig checks that newKfake refuses what kfake cannot take.
func TestKafkaKfakeConfig(t *testing.T) {
	good := kfakeConfig{Topic: "t", Partitions: 1, SessionMin: time.Second, Heartbeat: 100 * time.Millisecond, Session: 2 * time.Second}
	for name, change := range map[string]func(*kfakeConfig){
		"no topic":             func(c *kfakeConfig) { c.Topic = "" },
		"no partitions":        func(c *kfakeConfig) { c.Partitions = 0 },
		"sub-ms heartbeat":     func(c *kfakeConfig) { c.Heartbeat = 1500 * time.Microsecond },
		"heartbeat ≥ session":  func(c *kfakeConfig) { c.Heartbeat = c.Session },
		"zero session minimum": func(c *kfakeConfig) { c.SessionMin = 0 },
	} {
		cfg := good
		change(&cfg)
		if c, _, err := newKfake(cfg); err == nil {
			c.Close()
			t.Errorf("%s: newKfake accepted %+v", name, cfg)
		}
	}
}
