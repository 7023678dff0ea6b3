// Package engines compares bbolt and Pebble on Roost's store workload. It is
// its own module so that the candidate not chosen stays out of Roost's
// go.mod. Results and the choice: ../RESULTS.md.
package engines

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
)

// The workload, per message: store its body once, add one queue entry per
// matching offline session, and later (lag messages behind) delete those
// entries as they are acknowledged and then the body. One commit, with one
// fsync, carries a batch of messages: the group commit of many publishers.
const (
	payloadSize = 200
	lag         = 1000 // messages in the queues at any time
)

type engine interface {
	// commit applies one batch: puts, then deletes, durably.
	commit(puts [][2][]byte, dels [][]byte) error
	close() error
}

func msgKey(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte("m/"), id) }

func queueKey(client int, seq uint64) []byte {
	k := fmt.Appendf(nil, "q/client-%05d/", client)
	return binary.BigEndian.AppendUint64(k, seq)
}

func run(b *testing.B, e engine, fanout, batch int) {
	defer e.close()
	body := make([]byte, payloadSize)
	ref := binary.BigEndian.AppendUint64(nil, 0)
	var id uint64
	b.SetBytes(int64(payloadSize + fanout*16))
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += batch {
		var puts [][2][]byte
		var dels [][]byte
		for range batch {
			id++
			puts = append(puts, [2][]byte{msgKey(id), body})
			for c := range fanout {
				puts = append(puts, [2][]byte{queueKey(c, id), ref})
			}
			if id > lag {
				old := id - lag
				for c := range fanout {
					dels = append(dels, queueKey(c, old))
				}
				dels = append(dels, msgKey(old))
			}
		}
		if err := e.commit(puts, dels); err != nil {
			b.Fatal(err)
		}
	}
}

type boltEngine struct{ db *bolt.DB }

var bucket = []byte("b")

func openBolt(b *testing.B) engine {
	db, err := bolt.Open(b.TempDir()+"/bolt.db", 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
		b.Fatal(err)
	}
	return &boltEngine{db}
}

func (e *boltEngine) commit(puts [][2][]byte, dels [][]byte) error {
	return e.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		for _, kv := range puts {
			if err := bk.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		for _, k := range dels {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *boltEngine) close() error { return e.db.Close() }

type pebbleEngine struct{ db *pebble.DB }

func openPebble(b *testing.B) engine {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quiet{}})
	if err != nil {
		b.Fatal(err)
	}
	return &pebbleEngine{db}
}

func (e *pebbleEngine) commit(puts [][2][]byte, dels [][]byte) error {
	bt := e.db.NewBatch()
	defer bt.Close()
	for _, kv := range puts {
		if err := bt.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	for _, k := range dels {
		if err := bt.Delete(k, nil); err != nil {
			return err
		}
	}
	return bt.Commit(pebble.Sync)
}

func (e *pebbleEngine) close() error { return e.db.Close() }

// quiet drops Pebble's informational logging.
type quiet struct{}

func (quiet) Infof(string, ...any)      {}
func (quiet) Errorf(f string, a ...any) { fmt.Printf(f+"\n", a...) }
func (quiet) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func BenchmarkWorkload(b *testing.B) {
	engines := []struct {
		name string
		open func(*testing.B) engine
	}{{"bbolt", openBolt}, {"pebble", openPebble}}
	for _, fanout := range []int{1, 10} {
		for _, batch := range []int{1, 16, 128} {
			for _, e := range engines {
				b.Run(fmt.Sprintf("%s/fanout=%d/batch=%d", e.name, fanout, batch), func(b *testing.B) {
					run(b, e.open(b), fanout, batch)
				})
			}
		}
	}
}
