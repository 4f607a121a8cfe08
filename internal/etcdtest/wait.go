package etcdtest

import "time"

// waitPoll is how often WaitUntil calls its condition.
const waitPoll = 10 * time.Millisecond

// WaitUntil calls cond every 10ms until it returns true, then returns true.
// If timeout passes first it calls cond once more and returns its result, so
// a condition that became true just at the deadline is not reported as a
// timeout.
//
// It is for tests that wait on a condition with a deadline, never on fixed
// sleeps: a test that sleeps for a guessed time is slow when the guess is
// long and flaky when it is short, while a deadline only bounds how long a
// failing test takes.
func WaitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return cond()
		}
		time.Sleep(min(waitPoll, left))
	}
}
