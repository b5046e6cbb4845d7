//! Prometheus metrics (`GET /metrics`, text exposition format) through the
//! `prometheus-client` crate, one registry per server: HTTP requests by route and status
//! with a latency histogram, jobs by state, queue depth, busy workers, WebSocket clients,
//! process and MLX memory, and each running job's training tokens/s and loss. Counters are
//! kept as things happen; the gauges that describe state are read when scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label pairs of a series.
pub type Labels = Vec<(String, String)>;

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The server's metrics.
pub struct Telemetry {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub http_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub jobs: Family<Labels, Gauge>,
    pub queue_depth: Gauge,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    pub websocket_clients: Gauge,
    pub resident_memory: Gauge,
    pub mlx_active_memory: Gauge,
    pub mlx_peak_memory: Gauge,
    pub job_tokens_per_second: Family<Labels, FloatGauge>,
    pub job_loss: Family<Labels, FloatGauge>,
    pub inference_requests: Family<Labels, Counter>,
    pub inference_tokens: Counter,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut t = Telemetry {
            registry: Registry::with_prefix("mlxtune"),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            jobs: Family::default(),
            queue_depth: Gauge::default(),
            workers: Gauge::default(),
            workers_busy: Gauge::default(),
            websocket_clients: Gauge::default(),
            resident_memory: Gauge::default(),
            mlx_active_memory: Gauge::default(),
            mlx_peak_memory: Gauge::default(),
            job_tokens_per_second: Family::default(),
            job_loss: Family::default(),
            inference_requests: Family::default(),
            inference_tokens: Counter::default(),
        };
        t.register();
        t
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            self.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            self.http_duration.clone(),
        );
        r.register("jobs", "Jobs by state", self.jobs.clone());
        r.register(
            "queue_depth",
            "Jobs waiting for a worker",
            self.queue_depth.clone(),
        );
        r.register(
            "workers",
            "Worker threads of this server",
            self.workers.clone(),
        );
        r.register(
            "workers_busy",
            "Workers running a job",
            self.workers_busy.clone(),
        );
        r.register(
            "websocket_clients",
            "Open job streams",
            self.websocket_clients.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            self.resident_memory.clone(),
        );
        r.register(
            "mlx_active_memory_bytes",
            "Memory MLX's allocator holds in arrays",
            self.mlx_active_memory.clone(),
        );
        r.register(
            "mlx_peak_memory_bytes",
            "Peak of MLX's allocator (reset at every training step)",
            self.mlx_peak_memory.clone(),
        );
        r.register(
            "training_tokens_per_second",
            "Loss tokens per second of each running job's last step",
            self.job_tokens_per_second.clone(),
        );
        r.register(
            "training_loss",
            "Training loss of each running job's last step",
            self.job_loss.clone(),
        );
        r.register(
            "inference_requests",
            "Inference requests by outcome (stop, length, cancelled: the client left, rejected, failed)",
            self.inference_requests.clone(),
        );
        r.register(
            "inference_generated_tokens",
            "Tokens generated for inference requests",
            self.inference_tokens.clone(),
        );
    }

    /// One finished HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = vec![
            ("method".to_string(), method.to_string()),
            ("route".to_string(), route.to_string()),
        ];
        self.http_duration.get_or_create(&labels).observe(seconds);
        let mut with_status = labels;
        with_status.push(("status".into(), status.to_string()));
        self.http_requests.get_or_create(&with_status).inc();
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One label pair.
pub fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// The process's resident memory, from /proc/self/status (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Decrements a gauge when dropped (an open WebSocket, a busy worker).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn hold(g: &Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
