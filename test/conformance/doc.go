// Package conformance checks a running MQTT broker against the normative
// statements of MQTT 3.1.1 and 5.0 by speaking raw bytes to it.
//
// Each test is named after the statement it checks: [MQTT-3.1.0-1] becomes
// TestMQTT_3_1_0_1_..., and a 5.0-only rule is TestMQTT5_.... Where a rule
// has no numbered statement the test is named after its section, as in
// TestMQTT5_Sec3_14_2_2_2_.... Where the two versions number the same rule
// differently, the test uses the number given in its doc comment and names
// the other there too.
//
// Packets are written as literal byte slices, or built with the framing
// helpers of internal/rawclient, never with Roost's own packet codec: the
// suite must be able to catch a bug in that codec.
//
// By default the suite runs an in-process Roost broker per test. Setting
// ROOST_CONFORMANCE_TARGET=mosquitto runs the same tests against a
// mosquitto process per test instead; that is how the tests themselves
// were validated. Known mosquitto deviations are listed in NOTES.md.
package conformance
