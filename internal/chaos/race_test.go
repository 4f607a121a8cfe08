//go:build race

package chaos_test

// raceEnabled says the test binary runs with the race detector, so the
// worker program is built with it too.
const raceEnabled = true
