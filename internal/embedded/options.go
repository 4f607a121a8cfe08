package embedded

import (
	"log/slog"
	"time"
)

// Option configures [Start].
type Option func(*options)

type options struct {
	logger          *slog.Logger
	electionTimeout time.Duration
	startTimeout    time.Duration
	noFsync         bool
}

func defaultOptions() options {
	return options{
		logger:          slog.New(slog.DiscardHandler),
		electionTimeout: 500 * time.Millisecond,
		startTimeout:    10 * time.Second,
	}
}

// WithLogger sends etcd's warnings and errors to l. Its informational
// messages are dropped: etcd logs several per second while idle. The
// default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithElectionTimeout sets etcd's election timeout (its heartbeat is a tenth
// of it). etcd grants no lease TTL below 1.5 × the election timeout, so the
// default of 500ms lets clients use TTLs down to 750ms. Values below 50ms are
// raised to 50ms.
func WithElectionTimeout(d time.Duration) Option {
	return func(o *options) {
		o.electionTimeout = max(d, 50*time.Millisecond)
	}
}

// WithStartTimeout bounds how long [Start] waits for the server to become
// ready; the default is 10s.
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.startTimeout = d
		}
	}
}

// WithUnsafeNoFsync disables fsync of etcd's write-ahead log and database.
// Writes get much faster on slow disks, and a machine crash may lose them:
// use it for throwaway data only.
func WithUnsafeNoFsync() Option {
	return func(o *options) { o.noFsync = true }
}
