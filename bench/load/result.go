package load

// Result is what a run measured. Rates are per second over the measured
// interval; totals cover the whole run, warm-up and drain included. It is
// written as JSON by `roost bench --json`, so the field names are stable.
type Result struct {
	Scenario    Scenario `json:"scenario"`
	URL         string   `json:"url"`
	Protocol    int      `json:"protocol"`
	QoS         int      `json:"qos"`
	Size        int      `json:"size"`
	Publishers  int      `json:"publishers,omitempty"`
	Subscribers int      `json:"subscribers,omitempty"`
	Window      int      `json:"window,omitempty"`
	Flat        bool     `json:"flat,omitempty"`
	Rate        float64  `json:"rate,omitempty"`     // requested publish rate, msgs/s
	SubRate     float64  `json:"sub_rate,omitempty"` // Overload's slow subscriber, msgs/s

	Warmup   float64 `json:"warmup_s"`
	Duration float64 `json:"duration_s"` // measured, as it happened

	// Published and Delivered are counted over the measured interval;
	// Delivered counts every copy at every subscriber.
	Published   uint64  `json:"published"`
	Delivered   uint64  `json:"delivered"`
	PublishRate float64 `json:"publish_rate"`
	DeliverRate float64 `json:"deliver_rate"`

	// Over the whole run: Expected is PublishedTotal times the copies
	// each message should produce; Missing is what never arrived (dropped
	// by the broker, or still in flight when the drain gave up).
	PublishedTotal uint64 `json:"published_total"`
	DeliveredTotal uint64 `json:"delivered_total"`
	ExpectedTotal  uint64 `json:"expected_total"`
	Missing        int64  `json:"missing"`
	// LoadCPU is the CPU the bench process used during the measured
	// interval, in cores (1.0 = one core busy all the time). Near 1.0 on a
	// one-core cpuset the load generator, not the broker, was the limit.
	LoadCPU float64 `json:"load_cpu"`
	// PublishErrors counts acknowledgements with a failure reason code
	// (MQTT 5) from the broker.
	PublishErrors uint64 `json:"publish_errors,omitempty"`

	Latency     *LatencyStats   `json:"latency,omitempty"`
	Connections *ConnStats      `json:"connections,omitempty"`
	Broker      *BrokerStats    `json:"broker,omitempty"`
	Causality   *CausalityStats `json:"causality,omitempty"`

	// Notes are things the reader of the numbers must know: caps applied,
	// a broker that refused connections, drains that timed out.
	Notes []string `json:"notes,omitempty"`
}

// LatencyStats summarises end-to-end latency in microseconds. Quantiles
// are accurate to about 1.6% (the histogram's bucket width).
type LatencyStats struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// ConnStats is the Connections scenario's outcome.
type ConnStats struct {
	Requested int `json:"requested"`
	// Attempted is Requested after the open-file cap (see Result.Notes).
	Attempted int     `json:"attempted"`
	Opened    int     `json:"opened"`
	Failed    int     `json:"failed"`
	Elapsed   float64 `json:"connect_s"`    // time to open them all
	Rate      float64 `json:"connect_rate"` // opened per second
	// FirstError is the first failure, as an example of what went wrong.
	FirstError string  `json:"first_error,omitempty"`
	Held       float64 `json:"held_s"`
	// Steps are the broker's RSS after each batch, when its process is
	// known: memory per connection should stay flat as the count grows.
	Steps []ConnStep `json:"steps,omitempty"`
}

// ConnStep is the broker's RSS with Conns connections open.
type ConnStep struct {
	Conns  int   `json:"conns"`
	RSSKiB int64 `json:"rss_kib"`
}

// BrokerStats is what the run learnt about the broker's process and its
// own counters.
type BrokerStats struct {
	PID int `json:"pid,omitempty"`
	// RSS in KiB from /proc/PID/status: before the load, at its end (for
	// Connections: with every connection still open) and the largest
	// sample (taken every second).
	RSSBeforeKiB int64 `json:"rss_before_kib,omitempty"`
	RSSAfterKiB  int64 `json:"rss_after_kib,omitempty"`
	RSSMaxKiB    int64 `json:"rss_max_kib,omitempty"`
	// CPU is the broker's CPU use during the measured interval (for
	// Connections: while opening them), in cores.
	CPU float64 `json:"cpu,omitempty"`
	// KiBPerConn is (after - before) / opened, Connections only.
	KiBPerConn float64 `json:"kib_per_conn,omitempty"`
	// Dropped is the change of $SYS/broker/publish/messages/dropped over
	// the run (Config.SysDropped); nil when not read.
	Dropped *int64 `json:"dropped,omitempty"`
}

// CausalityStats is the Causality scenario's outcome.
type CausalityStats struct {
	Idle  float64    `json:"idle_s"`  // each pair idle before a trial
	Quiet float64    `json:"quiet_s"` // the broker quiet before a trial
	Pairs int        `json:"pairs"`
	Gaps  []GapStats `json:"gaps"`
}

// GapStats is what the trials at one gap found. An inversion is a trial
// whose PUBLISH the broker routed before it applied the SUBSCRIBE sent
// Gap earlier on another connection.
type GapStats struct {
	Gap         float64 `json:"gap_us"`
	GapMean     float64 `json:"gap_mean_us"` // as achieved, write to write
	Trials      int     `json:"trials"`
	Inversions  int     `json:"inversions"`
	PerThousand float64 `json:"per_1000"`
	// Puback is the time from the probe's write to its PUBACK: how fast
	// the broker answers a connection that wakes from idle.
	Puback *LatencyStats `json:"puback,omitempty"`
}
