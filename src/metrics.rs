//! `/metrics`: the Prometheus (OpenMetrics) text of every module's counters.
//!
//! Each module counts where it works, in plain atomics or
//! `prometheus-client` histograms it owns, and says what they are by
//! implementing [`Collect`]: at scrape time it adds its samples to a
//! [`Scrape`] under the family names it owns. The [`Registry`] the
//! composition root builds asks each part in turn and encodes the result,
//! so no list of counters is kept in step anywhere else. Two parts may add
//! to one family (the Hiya cache and the live providers both count
//! `sipsentry_lookups`); the family is written once.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

/// A sample's labels.
pub type Labels = Vec<(&'static str, String)>;

/// Something that has metrics to report.
pub trait Collect: Send + Sync {
    fn collect(&self, out: &mut Scrape);
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Histogram),
}

/// One metric family: its name (counters without `_total`, which the
/// encoder adds), help, type and samples.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    /// Adds a counter sample.
    pub fn count(&mut self, labels: Labels, v: u64) -> &mut Self {
        self.samples.push((labels, Value::Counter(v)));
        self
    }

    /// Adds a gauge sample.
    pub fn set(&mut self, labels: Labels, v: f64) -> &mut Self {
        self.samples.push((labels, Value::Gauge(v)));
        self
    }

    /// Adds a histogram (a cheap clone of a shared one).
    pub fn observe(&mut self, labels: Labels, h: &Histogram) -> &mut Self {
        self.samples.push((labels, Value::Histogram(h.clone())));
        self
    }
}

/// The samples of one scrape, by family, in the order first named.
#[derive(Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The counter family `name` (written `name_total`).
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Counter)
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Gauge)
    }

    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Histogram)
    }
}

/// The parts `/metrics` asks, in order.
#[derive(Clone, Default)]
pub struct Registry {
    parts: Vec<Arc<dyn Collect>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl Registry {
    pub fn register(&mut self, part: Arc<dyn Collect>) {
        self.parts.push(part);
    }

    /// The current metrics in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut scrape = Scrape::default();
        for part in &self.parts {
            part.collect(&mut scrape);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Encoded(scrape)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// A finished scrape, handed to `prometheus-client`'s encoder (which wants
/// a `Collector`: `Debug + Send + Sync`).
struct Encoded(Scrape);

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encoded")
    }
}

impl prometheus_client::collector::Collector for Encoded {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        for f in &self.0.families {
            let mut m = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                if labels.is_empty() {
                    // A bare sample, not `name{} v`; only one can be.
                    encode_value(v, m)?;
                    break;
                }
                encode_value(v, m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

fn encode_value(v: &Value, m: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
    match v {
        Value::Counter(n) => ConstCounter::new(*n).encode(m),
        Value::Gauge(x) => ConstGauge::new(*x).encode(m),
        Value::Histogram(h) => h.encode(m),
    }
}
