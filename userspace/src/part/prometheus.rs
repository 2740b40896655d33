//! The one way every part writes its metrics: families registered in a `prometheus-client`
//! [`Registry`] (prefix `portier_<part>_`) and encoded in the OpenMetrics text format, so each
//! family has its HELP and TYPE, counters end in `_total`, and label values are escaped by
//! the library rather than by each part.
//!
//! Parts hold their counters in their own state (atomics, snapshots); on each publish they
//! copy them into a fresh registry. A sample is added with [`Metrics::counter`] or
//! [`Metrics::gauge`] in whatever order the part walks its objects: the family is registered
//! on first use and its samples stay together in the output.

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// A sample's labels: (name, value), in the order written.
pub type Labels = Vec<(&'static str, String)>;

/// The content type of [`Metrics::text`] put together with [`eof`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One part's metrics for one publish.
pub struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    seconds: HashMap<&'static str, Family<Labels, Counter<f64, AtomicU64>>>,
    gauges: HashMap<&'static str, Family<Labels, Gauge>>,
    histograms: HashMap<&'static str, Family<Labels, HistogramSample>>,
}

/// A histogram as a part counted it (its own lock-free buckets), for the encoder: what
/// prometheus-client's `Histogram` would encode after the same observations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histogram {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations in this bucket alone), the last bound `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
}

/// One family member: set once per publish, encoded by prometheus-client's histogram encoder.
#[derive(Debug, Default)]
pub struct HistogramSample(Mutex<Histogram>);

impl TypedMetric for HistogramSample {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramSample {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().map_err(|_| std::fmt::Error)?;
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The library appends the period of a HELP text itself.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

impl Metrics {
    /// Families of part `part` are named `portier_<part>_<name>`.
    pub fn new(part: &str) -> Self {
        Self {
            registry: Registry::with_prefix(format!("portier_{part}")),
            counters: HashMap::new(),
            seconds: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
        }
    }

    /// Sets histogram `name` (with its unit in the name, e.g. `_seconds`) for `labels`.
    pub fn histogram(&mut self, name: &'static str, help: &str, labels: Labels, value: Histogram) {
        let family = self.histograms.entry(name).or_insert_with(|| {
            let f = Family::<Labels, HistogramSample>::default();
            self.registry.register(name, help_text(help), f.clone());
            f
        });
        if let Ok(mut h) = family.get_or_create(&labels).0.lock() {
            *h = value;
        }
    }

    /// Adds `value` to counter `name` (without `_total`: the encoder appends it) for
    /// `labels`.
    pub fn counter(&mut self, name: &'static str, help: &str, labels: Labels, value: u64) {
        let family = self.counters.entry(name).or_insert_with(|| {
            let f = Family::<Labels, Counter>::default();
            self.registry.register(name, help_text(help), f.clone());
            f
        });
        family.get_or_create(&labels).inc_by(value);
    }

    /// Adds `value` to counter `name` of time in seconds (without `_total`; `name` ends in
    /// `_seconds`) for `labels`.
    pub fn counter_seconds(&mut self, name: &'static str, help: &str, labels: Labels, value: f64) {
        let family = self.seconds.entry(name).or_insert_with(|| {
            let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
            self.registry.register(name, help_text(help), f.clone());
            f
        });
        family.get_or_create(&labels).inc_by(value);
    }

    /// Sets gauge `name` for `labels`.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: Labels, value: i64) {
        let family = self.gauges.entry(name).or_insert_with(|| {
            let f = Family::<Labels, Gauge>::default();
            self.registry.register(name, help_text(help), f.clone());
            f
        });
        family.get_or_create(&labels).set(value);
    }

    /// A gauge from an unsigned count (saturating: no count here comes near 2^63).
    pub fn gauge_u(&mut self, name: &'static str, help: &str, labels: Labels, value: u64) {
        self.gauge(name, help, labels, i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// The families in the OpenMetrics text format, without the final `# EOF` (the admin API
    /// puts the parts together and ends the exposition once).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        out
    }
}

/// The line that ends an exposition.
pub fn eof() -> String {
    let mut out = String::new();
    let _ = encode_eof(&mut out);
    out
}

/// Shorthand for a label list: `labels![("pool", name), ("server", addr)]`.
#[macro_export]
macro_rules! labels {
    ($(($k:expr, $v:expr)),* $(,)?) => {
        vec![$(($k, ::std::string::ToString::to_string(&$v))),*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_total_and_escaped_labels() {
        let mut m = Metrics::new("x");
        m.counter("packets", "Packets seen.", vec![], 3);
        m.gauge("up", "1 while up.", labels![("pool", "a\"b\\c\nd")], 1);
        m.counter("requests", "Requests.", labels![("pool", "p")], 2);
        m.gauge("up", "1 while up.", labels![("pool", "q")], 0);
        m.counter("requests", "Requests.", labels![("pool", "q")], 5);
        let text = m.text() + &eof();
        for family in [
            "# HELP portier_x_packets Packets seen.\n# TYPE portier_x_packets counter\nportier_x_packets_total 3\n",
            "# HELP portier_x_up 1 while up.\n# TYPE portier_x_up gauge\n",
            "# HELP portier_x_requests Requests.\n# TYPE portier_x_requests counter\n",
        ] {
            assert!(text.contains(family), "{family:?} in\n{text}");
        }
        for sample in [
            "portier_x_up{pool=\"a\\\"b\\\\c\\nd\"} 1\n",
            "portier_x_up{pool=\"q\"} 0\n",
            "portier_x_requests_total{pool=\"p\"} 2\n",
            "portier_x_requests_total{pool=\"q\"} 5\n",
        ] {
            assert!(text.contains(sample), "{sample:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_count_and_inf() {
        let mut m = Metrics::new("x");
        let h = Histogram {
            sum: 0.75,
            count: 3,
            buckets: vec![(0.1, 1), (0.5, 2), (f64::INFINITY, 0)],
        };
        m.histogram("latency_seconds", "Latency.", labels![("pool", "p")], h);
        let text = m.text();
        for line in [
            "# TYPE portier_x_latency_seconds histogram\n",
            "portier_x_latency_seconds_sum{pool=\"p\"} 0.75\n",
            "portier_x_latency_seconds_count{pool=\"p\"} 3\n",
            "portier_x_latency_seconds_bucket{le=\"0.1\",pool=\"p\"} 1\n",
            "portier_x_latency_seconds_bucket{le=\"0.5\",pool=\"p\"} 3\n",
            "portier_x_latency_seconds_bucket{le=\"+Inf\",pool=\"p\"} 3\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
