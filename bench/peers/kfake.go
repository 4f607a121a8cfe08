package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-go/baton/internal/benchproc"
)

// kfakeConfig is one kfake store's settings.
type kfakeConfig struct {
	Topic      string
	Partitions int
	// SessionMin is group.min.session.timeout.ms, the least session
	// timeout a classic member may ask for.
	SessionMin time.Duration
	// Heartbeat and Session are KIP-848's group.consumer.heartbeat.interval.ms
	// and group.consumer.session.timeout.ms: in that protocol the broker,
	// not the member, sets both.
	Heartbeat time.Duration
	Session   time.Duration
}

// newKfake starts a one-broker kfake cluster with cfg.Topic seeded with
// cfg.Partitions partitions, and counts, by kmsg request name, every request
// the cluster receives from then on. It fails on a value kfake cannot take.
//
// kfake enforces no bounds on the two group.consumer settings (Kafka's
// group.consumer.{min,max}.{session.timeout,heartbeat.interval}.ms are not
// among its configs, and unknown configs are ignored silently), so they are
// checked here: positive, whole milliseconds, and a heartbeat shorter than
// the session, which Kafka requires of its defaults.
func newKfake(cfg kfakeConfig) (*kfake.Cluster, *kafkaCounts, error) {
	if cfg.Topic == "" {
		return nil, nil, errors.New("kfake: no topic")
	}
	if cfg.Partitions < 1 || cfg.Partitions > math.MaxInt32 {
		return nil, nil, fmt.Errorf("kfake: %d partitions", cfg.Partitions)
	}
	hb, err := kfakeMillis("heartbeat (group.consumer.heartbeat.interval.ms)", cfg.Heartbeat)
	if err != nil {
		return nil, nil, err
	}
	session, err := kfakeMillis("session (group.consumer.session.timeout.ms)", cfg.Session)
	if err != nil {
		return nil, nil, err
	}
	if _, err := kfakeMillis("session-min (group.min.session.timeout.ms)", cfg.SessionMin); err != nil {
		return nil, nil, err
	}
	if cfg.Heartbeat >= cfg.Session {
		return nil, nil, fmt.Errorf("kfake: heartbeat %v is not shorter than session %v", cfg.Heartbeat, cfg.Session)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic),
		kfake.GroupMinSessionTimeout(cfg.SessionMin),
		kfake.BrokerConfigs(map[string]string{
			"group.consumer.heartbeat.interval.ms": hb,
			"group.consumer.session.timeout.ms":    session,
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("kfake: %w", err)
	}
	counts := newKafkaCounts()
	// A control function that does not handle the request only observes
	// it: it stays installed and the cluster handles the request. It sees
	// each request once: a fetch parked until data arrives is handled
	// again when it wakes, but kfake does not show a control function the
	// same request twice.
	c.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		counts.add(req.Key())
		return nil, nil, false
	})
	return c, counts, nil
}

// kfakeMillis returns d in milliseconds, as a kfake config value, or an
// error naming what if kfake cannot take it.
func kfakeMillis(what string, d time.Duration) (string, error) {
	if d <= 0 || d%time.Millisecond != 0 || d.Milliseconds() > math.MaxInt32 {
		return "", fmt.Errorf("kfake: %s %v: want whole milliseconds in [1ms, %dms]", what, d, math.MaxInt32)
	}
	return strconv.FormatInt(d.Milliseconds(), 10), nil
}

// kfakeMain runs the store of one Kafka group: a kfake cluster, up until its
// stdin ends.
//
//	peers kfake -topic g -partitions 1000 -session-min 1s -heartbeat 100ms -session 2s
func kfakeMain(args []string) error {
	return runKfake(args, os.Stdin, os.Stdout)
}

// runKfake starts the cluster kfakeMain's flags in args describe, writes the
// benchproc ready line to out with body {"addr": host:port}, and answers the
// commands read from in: "usage" with the requests the cluster received, by
// name; anything else with an error. At the end of in it closes the cluster
// and returns nil.
func runKfake(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	var cfg kfakeConfig
	fs.StringVar(&cfg.Topic, "topic", "", "topic (and group) name")
	fs.IntVar(&cfg.Partitions, "partitions", 1000, "partitions of the topic")
	fs.DurationVar(&cfg.SessionMin, "session-min", 6*time.Second, "group.min.session.timeout.ms: the least classic session timeout")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 5*time.Second, "KIP-848 group.consumer.heartbeat.interval.ms")
	fs.DurationVar(&cfg.Session, "session", 45*time.Second, "KIP-848 group.consumer.session.timeout.ms")
	if err := fs.Parse(args); err != nil {
		return err
	}
	child := benchproc.NewChild(out)
	c, counts, err := newKfake(cfg)
	if err != nil {
		_ = child.Send(benchproc.OpReady, nil, err)
		return err
	}
	defer c.Close()
	if err := child.Send(benchproc.OpReady, map[string]string{"addr": c.ListenAddrs()[0]}, nil); err != nil {
		return err
	}
	return child.Serve(in, func(cmd string) (any, bool, error) {
		if cmd == benchproc.CmdUsage {
			return counts.snapshot(), false, nil
		}
		return nil, false, fmt.Errorf("kfake: unknown command %q", cmd)
	})
}
