// Command peers runs the systems Baton is compared with — Kafka consumer
// groups (franz-go's kgo on kfake, its in-process Kafka) and Grafana dskit's
// ring on etcd — one member per OS process, for internal/bench's "peers"
// scenario. It lives in a module of its own so that neither the library's
// go.mod nor a consumer's dependency graph grows with them.
//
//	peers member -system kafka-classic -id m00 -group g -items 1000 -brokers 127.0.0.1:9092 ...
//	peers kfake -partitions 1000 -topic g ...
//
// It speaks internal/benchproc's line protocol on stdin and stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/benchproc"
	"github.com/baton-go/baton/internal/recorder"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peers member|kfake [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "member":
		err = memberMain(os.Args[2:])
	case "kfake":
		err = kfakeMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// memberConfig is one member's settings, from its command line.
type memberConfig struct {
	System string // kafka-classic, kafka-848, ring
	ID     string
	Group  string // Kafka: the group and the topic; ring: the ring's key prefix
	Items  int    // item i is benchproc.SyncID(i): Kafka's partition i, or the ring's key
	// Session is how long a silent member is still counted alive: Kafka's
	// session timeout, the ring's heartbeat timeout.
	Session   time.Duration
	Heartbeat time.Duration // Kafka's heartbeat interval, the ring's heartbeat period
	Brokers   []string      // Kafka: the kfake cluster
	Endpoints []string      // ring: etcd
	Tokens    int           // ring: tokens per instance
}

// peer is one running member of a peer system.
type peer interface {
	// drain gives every item away and returns once the member owns none;
	// the member may leave its group to do so (Kafka, the ring).
	drain(ctx context.Context) error
	// leave leaves the group cleanly, if drain has not, and frees
	// everything.
	leave(ctx context.Context) error
	// usage is what the member sent to its store, by request kind; nil
	// when only the store can count (the ring: dskit makes its own etcd
	// client).
	usage() map[string]int64
}

// ownership is where a member reports what it runs: start when an item
// begins to run on it, end when it stops. Tokens: Kafka and the ring have
// none, so each interval's token is its start instant, which keeps the
// recorder's token rule trivially true and leaves it the overlap rule.
type ownership struct {
	member string
	rec    *recorder.Recorder

	mu    sync.Mutex       // a leaf
	owned map[string]int64 // item -> token of its open interval
}

func newOwnership(member string, rec *recorder.Recorder) *ownership {
	return &ownership{member: member, rec: rec, owned: map[string]int64{}}
}

// start records that item began to run here; a second start is ignored.
func (o *ownership) start(item string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.owned[item]; ok {
		return
	}
	t := recorder.Now()
	o.owned[item] = t
	o.rec.StartAt(o.member, item, t, t)
}

// end records that item stopped running here; ending one not owned is
// ignored.
func (o *ownership) end(item string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	tok, ok := o.owned[item]
	if !ok {
		return
	}
	delete(o.owned, item)
	o.rec.End(o.member, item, tok)
}

// count is how many items run here.
func (o *ownership) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.owned)
}

// items lists what runs here.
func (o *ownership) items() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.owned))
	for it := range o.owned {
		out = append(out, it)
	}
	return out
}

func memberMain(args []string) error {
	fs := flag.NewFlagSet("member", flag.ContinueOnError)
	var cfg memberConfig
	var brokers, endpoints string
	fs.StringVar(&cfg.System, "system", "", "kafka-classic, kafka-848 or ring")
	fs.StringVar(&cfg.ID, "id", "", "member ID")
	fs.StringVar(&cfg.Group, "group", "", "group name")
	fs.IntVar(&cfg.Items, "items", 1000, "items (partitions)")
	fs.DurationVar(&cfg.Session, "session", 10*time.Second, "session timeout / heartbeat timeout")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", time.Second, "heartbeat interval / period")
	fs.StringVar(&brokers, "brokers", "", "Kafka: comma-separated broker addresses")
	fs.StringVar(&endpoints, "endpoints", "", "ring: comma-separated etcd endpoints")
	fs.IntVar(&cfg.Tokens, "tokens", 128, "ring: tokens per instance")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Brokers = splitList(brokers)
	cfg.Endpoints = splitList(endpoints)
	if cfg.ID == "" || cfg.Group == "" || cfg.Items < 1 {
		return errors.New("member: -id, -group and -items ≥ 1 are required")
	}
	child := benchproc.NewChild(os.Stdout)
	own := newOwnership(cfg.ID, child.Rec)
	return child.RunMember(os.Stdin, func() (benchproc.Member, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var p peer
		var err error
		switch cfg.System {
		case "kafka-classic", "kafka-848":
			p, err = startKafka(ctx, cfg, own, child)
		case "ring":
			p, err = startRing(ctx, cfg, own, child)
		default:
			err = fmt.Errorf("unknown system %q", cfg.System)
		}
		if err != nil {
			return nil, err
		}
		return protoMember{p: p, own: own}, nil
	})
}

// protoMember drives a peer by the bench's protocol. The peers report no
// leader: none of them has one the bench could avoid killing.
type protoMember struct {
	p   peer
	own *ownership
}

func (m protoMember) Status() benchproc.Status        { return benchproc.Status{Owned: m.own.count()} }
func (m protoMember) Usage() any                      { return m.p.usage() }
func (m protoMember) Drain(ctx context.Context) error { return m.p.drain(ctx) }
func (m protoMember) Leave(ctx context.Context) error { return m.p.leave(ctx) }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
