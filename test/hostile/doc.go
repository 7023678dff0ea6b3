// Package hostile sends Roost malformed and hostile packet sequences and
// checks each reaction against the MQTT 3.1.1 and 5.0 specifications.
//
// Every case in corpus_test.go is the bytes a client writes (after a good
// CONNECT, when the case says so) and the reaction the specification
// demands, with the normative statement that demands it: a CONNACK code, a
// 5.0 DISCONNECT reason code, a reply on a connection that stays open, or
// the connection closed. The cases complement test/conformance, which
// covers the common violations one statement at a time; here are the rest:
// broken CONNECT flag combinations, bad properties, packets only a server
// sends, lengths that lie, several packets in one segment, and flow-control
// abuse. Packets are built with internal/rawclient, never with Roost's own
// codec, so a codec bug cannot hide itself.
//
// The same byte strings seed the broker's connection fuzzer: run
//
//	go test ./test/hostile -run TestFuzzSeeds -hostile.update-seeds
//
// after changing the corpus to rewrite broker/testdata/fuzz/FuzzConnection;
// TestFuzzSeeds fails while the two disagree.
package hostile
