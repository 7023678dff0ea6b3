//go:build race

package soak

// raceEnabled builds the broker under test with -race too, so a long run
// also hunts data races in the real process.
const raceEnabled = true
