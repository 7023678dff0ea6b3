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
	Storm       *StormStats     `json:"storm,omitempty"`
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
	// RSSSettledKiB is the RSS Settle (2 s) after the last connection
	// opened, and KiBPerConnSettled the same per connection: the broker
	// before any periodic clean-up (KiBPerConn is after the hold).
	// KiBPerConnMax is per connection at the largest sample while they
	// were open. Connections only.
	RSSSettledKiB     int64   `json:"rss_settled_kib,omitempty"`
	KiBPerConnSettled float64 `json:"kib_per_conn_settled,omitempty"`
	KiBPerConnMax     float64 `json:"kib_per_conn_max,omitempty"`
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

// StormStats is the Storm scenario's outcome. Times are in seconds from
// the moment the broker was told to stop.
type StormStats struct {
	Clients int `json:"clients"`
	// Stop is how long the broker took to exit, Start how long the new
	// one took to accept connections, Restart their sum.
	Stop    float64 `json:"stop_s"`
	Start   float64 `json:"start_s"`
	Restart float64 `json:"restart_s"`
	// Published is when the message published right after the restart
	// was acknowledged.
	Published float64 `json:"published_s"`
	// Reconnected counts the clients connected again, SessionsLost those
	// of them whose CONNACK said the session was gone, Received those
	// that got the message.
	Reconnected  int `json:"reconnected"`
	SessionsLost int `json:"sessions_lost"`
	Received     int `json:"received"`
	// AllConnected is when the last client was connected again,
	// AllReceived when the last one had the message: the storm's time.
	// Zero when that never happened within the run's Duration.
	AllConnected float64 `json:"all_connected_s,omitempty"`
	AllReceived  float64 `json:"all_received_s,omitempty"`
	// Attempts is how many connection attempts the clients made after
	// the stop (a refused one is retried after stormRetry).
	Attempts   int64  `json:"attempts"`
	FirstError string `json:"first_error,omitempty"`
}
