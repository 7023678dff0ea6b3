// Command startup measures how long roost takes to start on a store with
// many sessions and retained messages, and its resident memory afterwards.
// It writes the store directly through the store API, then runs the roost
// binary on it. Results: ../RESULTS.md.
//
//	go run ./bench/store/startup -sessions 100000 -retained 1000000
//
// With -data DIR the store is kept in DIR (and reused when DIR exists) and
// with -bin a prebuilt roost is run, so that builds can be compared on the
// same store.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

func main() {
	sessions := flag.Int("sessions", 100000, "persistent sessions, one subscription each")
	retained := flag.Int("retained", 1000000, "retained messages")
	payload := flag.Int("payload", 64, "retained payload bytes")
	runs := flag.Int("runs", 3, "start-ups to measure")
	prebuilt := flag.String("bin", "", "run this roost `binary` instead of building one (to compare builds)")
	keep := flag.String("data", "", "generate the store in `dir` and keep it; an existing dir is used as it is")
	flag.Parse()
	tmp, err := os.MkdirTemp("", "roost-startup-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	bin := *prebuilt
	if bin == "" {
		bin = filepath.Join(tmp, "roost")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/roost-mqtt/roost/cmd/roost").CombinedOutput(); err != nil {
			log.Fatalf("build: %v\n%s", err, out)
		}
	}
	data := filepath.Join(tmp, "data")
	if *keep != "" {
		data = *keep
	}
	if _, err := os.Stat(data); err == nil {
		fmt.Printf("using the store in %s (%s)\n", data, size(data))
	} else {
		t0 := time.Now()
		if err := generate(data, *sessions, *retained, *payload); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("generated %d sessions, %d retained in %v; store %s\n", *sessions, *retained, time.Since(t0).Round(time.Millisecond), size(data))
	}
	for run := range *runs {
		ready, rss, hwm, restored := start(bin, data)
		fmt.Printf("run %d: ready after %v; RSS %d MiB (peak %d MiB); %s\n", run, ready.Round(time.Millisecond), rss>>10, hwm>>10, restored)
	}
}

func generate(dir string, sessions, retained, payload int) error {
	d, err := store.Open(dir, store.DiskOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if _, err := d.Load(); err != nil {
		return err
	}
	var last broker.Ticket
	now := time.Now()
	for i := range sessions {
		id := fmt.Sprintf("device-%07d", i)
		last = d.Append(
			broker.Op{Kind: broker.OpSessionPut, ClientID: id, Session: broker.StoredSession{ClientID: id, Expiry: 7 * 86400, DisconnectedAt: now}},
			broker.Op{Kind: broker.OpSubPut, ClientID: id, Sub: broker.StoredSub{Filter: "cmd/" + id + "/#", Opts: packet.SubOptions{QoS: 1}}})
		if i%10000 == 0 {
			d.Wait(last)
		}
	}
	body := make([]byte, payload)
	for i := range retained {
		m := &broker.Message{ID: uint64(i + 1), Topic: fmt.Sprintf("sensors/%d/%d/state", i/1000, i%1000), Payload: body, QoS: 1, Retain: true}
		m.SetCreated(now)
		last = d.Append(broker.Op{Kind: broker.OpRetainPut, Msg: m})
		if i%10000 == 0 {
			d.Wait(last)
		}
	}
	if err := d.Wait(last); err != nil {
		return err
	}
	return d.Close()
}

// start runs roost on data until its listener is ready, samples its memory
// and stops it.
func start(bin, data string) (ready time.Duration, rss, hwm int64, restored string) {
	cmd := exec.Command(bin, "serve", "--listen", "mqtt://127.0.0.1:0", "--data", data)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		log.Fatal(err)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `msg="restored state"`) {
			restored = line[strings.Index(line, "sessions="):]
		}
		if strings.Contains(line, `msg="listener ready"`) {
			ready = time.Since(t0)
			break
		}
	}
	time.Sleep(2 * time.Second) // let start-up garbage be collected
	rss, hwm = memory(cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for sc.Scan() {
		}
	}()
	cmd.Wait()
	return ready, rss, hwm, restored
}

// memory returns VmRSS and VmHWM in KiB.
func memory(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		log.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var v int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &v); err == nil {
			rss = v
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &v); err == nil {
			hwm = v
		}
	}
	return rss, hwm
}

func size(dir string) string {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return fmt.Sprintf("%d MiB", n>>20)
}
