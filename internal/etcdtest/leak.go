package etcdtest

import "go.uber.org/goleak"

// LeakOptions are the goleak options every package that uses etcdtest passes
// to goleak.VerifyTestMain. They ignore only goroutines that etcd's server
// and test framework leave running by design after everything was closed.
//
// With etcd v3.7.3 there are none: every goroutine of an in-process cluster,
// an embedded server, a process cluster's waiters and the clients made here
// ends by the time the test's cleanups have run, even for a test that ends
// with members blackholed, paused, partitioned or stopped (a request stuck on
// a blackholed member ends about two seconds after its client is closed,
// within goleak's retries). The function exists so that a goroutine a future
// etcd version leaves behind is ignored in one place.
func LeakOptions() []goleak.Option {
	return nil
}
