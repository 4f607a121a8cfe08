package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/rebalance"
)

// Option configures a Coordinator. An Admin, a SyncStore and Describe read
// WithPrefix only; they accept WithLogger too (it has nothing to log there
// yet), so that one option list can serve a member and its admin tools,
// and reject every other option rather than drop it silently.
type Option func(*options)

type options struct {
	prefix        string
	memberID      string
	weight        int
	labels        map[string]string
	ttl           time.Duration
	balancer      rebalance.Balancer
	settle        time.Duration
	noLeadingEdge bool
	prepare       time.Duration
	revokeTimeout time.Duration
	logger        *slog.Logger
	registerer    prometheus.Registerer
}

const (
	// DefaultPrefix is the etcd key prefix every group lives under.
	DefaultPrefix = "/baton"
	// DefaultTTL is the membership lease TTL.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest TTL accepted.
	MinTTL = time.Second
	// DefaultSettle is how long the leader waits for changes to stop.
	DefaultSettle = 250 * time.Millisecond
	// DefaultPrepareTimeout bounds a prepared handoff (see Preparer).
	DefaultPrepareTimeout = 10 * time.Second
)

func defaultOptions() options {
	return options{
		prefix:  DefaultPrefix,
		weight:  1,
		ttl:     DefaultTTL,
		settle:  DefaultSettle,
		prepare: DefaultPrepareTimeout,
		logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// WithPrefix sets the etcd key prefix, default "/baton". Every segment must
// be a valid ID.
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithMemberID sets a stable member ID (for example a pod name): a member
// that restarts with the same ID within the TTL gets its syncs back with no
// reshuffle. The default is the hostname plus a random suffix.
func WithMemberID(id string) Option { return func(o *options) { o.memberID = id } }

// WithWeight sets the member's capacity in units, default 1; must be ≥ 1.
func WithWeight(w int) Option { return func(o *options) { o.weight = w } }

// WithLabels sets the member's labels, seen by the Balancer.
func WithLabels(l map[string]string) Option { return func(o *options) { o.labels = maps.Clone(l) } }

// WithTTL sets the membership lease TTL, default 10s, minimum 1s. etcd may
// grant a longer TTL (its floor is 1.5 × its election timeout); deadlines use
// the TTL granted.
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithBalancer sets the Balancer the member uses while it is leader,
// default rebalance.Sticky().
func WithBalancer(b rebalance.Balancer) Option { return func(o *options) { o.balancer = b } }

// WithSettle sets how long the leader waits for changes to stop before it
// rebalances, default 250ms. With the leading edge on (the default, see
// WithLeadingEdge), the first change after Settle of quiet is planned at
// once, and only the changes that follow it within Settle wait.
func WithSettle(d time.Duration) Option { return func(o *options) { o.settle = d } }

// WithLeadingEdge turns the leader's leading-edge rebalancing on or off;
// it is on by default. On, a change after Settle of quiet (a join, a
// drain, a crash, a sync added) is planned at once, and changes within
// Settle of it are coalesced into one more round. Off, every change waits
// for Settle of quiet first: a burst of changes spread over less than
// Settle then costs one round instead of two, for Settle more of delay on
// every change. Either way the first round of a new leader waits Settle,
// and a member that restarts with its member ID within the TTL gets its
// syncs back without a move.
func WithLeadingEdge(on bool) Option { return func(o *options) { o.noLeadingEdge = !on } }

// WithPrepareTimeout bounds a prepared handoff (see Preparer), default
// 10s: the owner of a sync that moves to a member whose Handler is a
// Preparer lets go once that member's OnPrepare has returned, or this long
// after it learned of the move, whichever comes first; and the member's
// OnPrepare gets a ctx that ends this long after it started. It must be
// positive. The owner's setting decides when it lets go.
func WithPrepareTimeout(d time.Duration) Option { return func(o *options) { o.prepare = d } }

// WithRevokeTimeout sets OnRevoke's budget when the lease is at risk,
// default TTL/4; must be less than TTL/2.
func WithRevokeTimeout(d time.Duration) Option { return func(o *options) { o.revokeTimeout = d } }

// WithLogger sets the logger, default none.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMetrics registers the coordinator's metrics with r, default none.
// Every metric carries the constant labels group and member; a coordinator
// made again with the same group, member ID and registry reuses them, so
// counters carry on across a restart in one process.
func WithMetrics(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.logger == nil {
		o.logger = defaultOptions().logger
	}
	return o
}

// validatePrefix checks the one setting that a member-less use (Admin,
// SyncStore, Describe) reads.
func (o *options) validatePrefix() error {
	if err := keys.ValidatePrefix(o.prefix); err != nil {
		return fmt.Errorf("coordinator: WithPrefix: %w", err)
	}
	return nil
}

// validateMember checks every setting of a member and how they relate.
func (o *options) validateMember() error {
	errs := []error{o.validatePrefix()}
	if o.memberID != "" {
		if err := keys.ValidateID("member", o.memberID); err != nil {
			errs = append(errs, fmt.Errorf("coordinator: WithMemberID: %w", err))
		}
	}
	if o.weight < 1 {
		errs = append(errs, fmt.Errorf("coordinator: WithWeight(%d): weight must be at least 1", o.weight))
	}
	if o.ttl < MinTTL {
		errs = append(errs, fmt.Errorf("coordinator: WithTTL(%v): TTL must be at least %v", o.ttl, MinTTL))
	}
	if o.ttl%time.Second != 0 {
		errs = append(errs, fmt.Errorf("coordinator: WithTTL(%v): etcd leases have whole seconds", o.ttl))
	}
	if o.settle < 0 {
		errs = append(errs, fmt.Errorf("coordinator: WithSettle(%v): must not be negative", o.settle))
	}
	if o.prepare <= 0 {
		errs = append(errs, fmt.Errorf("coordinator: WithPrepareTimeout(%v): must be positive", o.prepare))
	}
	if o.revokeTimeout < 0 {
		errs = append(errs, fmt.Errorf("coordinator: WithRevokeTimeout(%v): must not be negative", o.revokeTimeout))
	} else if o.revokeTimeout != 0 && o.revokeTimeout >= o.ttl/2 {
		errs = append(errs, fmt.Errorf("coordinator: WithRevokeTimeout(%v) must be less than TTL/2 (%v): the revoke must end before the lease can expire", o.revokeTimeout, o.ttl/2))
	}
	return errors.Join(errs...)
}

// memberlessOptions builds the options of a member-less use (caller names
// it in errors): only WithPrefix means something there, and WithLogger is
// accepted (see Option); any other option is an error rather than silently
// ignored, as is an invalid prefix.
func memberlessOptions(caller string, opts []Option) (options, error) {
	o := buildOptions(opts)
	if err := o.validatePrefix(); err != nil {
		return o, err
	}
	d := defaultOptions()
	var unusable []string
	for name, set := range map[string]bool{
		"WithMemberID":       o.memberID != d.memberID,
		"WithWeight":         o.weight != d.weight,
		"WithLabels":         o.labels != nil,
		"WithTTL":            o.ttl != d.ttl,
		"WithBalancer":       o.balancer != nil,
		"WithSettle":         o.settle != d.settle,
		"WithLeadingEdge":    o.noLeadingEdge,
		"WithPrepareTimeout": o.prepare != d.prepare,
		"WithRevokeTimeout":  o.revokeTimeout != d.revokeTimeout,
		"WithMetrics":        o.registerer != nil,
	} {
		if set {
			unusable = append(unusable, name)
		}
	}
	if len(unusable) > 0 {
		slices.Sort(unusable)
		return o, fmt.Errorf("coordinator: %s: options %v have no meaning there; only WithPrefix (and WithLogger) may be given", caller, unusable)
	}
	return o, nil
}

// fill sets the defaults that depend on other settings.
func (o *options) fill() error {
	if o.memberID == "" {
		id, err := defaultMemberID()
		if err != nil {
			return err
		}
		o.memberID = id
	}
	if o.revokeTimeout == 0 {
		o.revokeTimeout = o.ttl / 4
	}
	if o.balancer == nil {
		o.balancer = rebalance.Sticky()
	}
	return nil
}

// defaultMemberID is the hostname (cleaned to the ID alphabet) and a random
// suffix, so two processes on one host never share an ID by accident.
func defaultMemberID() (string, error) {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, host)
	if len(host) > 100 {
		host = host[:100]
	}
	if host == "" {
		host = "member"
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("coordinator: random member ID: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}
