//go:build race

package jepsen

// raceEnabled builds the broker under test with -race too: a run that
// kills and pauses it also hunts data races in the real process.
const raceEnabled = true
