//! Every metric of `/metrics`, exported to OpenTelemetry as well: a `metrics` recorder that
//! keeps counters and gauges in atomics the OTLP reader observes at each export, and records
//! histogram samples into OpenTelemetry histograms with the Prometheus buckets.
//!
//! Written here because no recorder that the `metrics` and OpenTelemetry projects maintain
//! bridges the two; it is the `metrics` crate's own registry and OpenTelemetry's own
//! instruments, joined.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// A `metrics` recorder whose metrics an OpenTelemetry meter exports.
#[derive(Clone)]
pub struct OtlpRecorder {
    meter: Meter,
    buckets: Vec<f64>,
    registry: Arc<Registry<Key, AtomicStorage>>,
    known: Arc<Mutex<Known>>,
}

impl std::fmt::Debug for OtlpRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpRecorder").finish_non_exhaustive()
    }
}

/// What has been described and which instruments exist, by metric name.
#[derive(Default)]
struct Known {
    descriptions: HashMap<String, (Option<Unit>, SharedString)>,
    /// Names whose observable instrument is registered with the meter, with the instrument,
    /// kept so that its callback lives as long as the recorder.
    observed: HashMap<String, Box<dyn std::any::Any + Send>>,
    histograms: HashMap<String, opentelemetry::metrics::Histogram<f64>>,
}

impl OtlpRecorder {
    /// A recorder exporting through `meter`, histograms bucketed at `buckets` (seconds).
    pub fn new(meter: Meter, buckets: &[f64]) -> Self {
        OtlpRecorder {
            meter,
            buckets: buckets.to_vec(),
            registry: Arc::new(Registry::atomic()),
            known: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // A panic while holding it leaves maps that are still whole: go on with them.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.known()
            .descriptions
            .insert(key.as_str().to_owned(), (unit, description));
    }

    /// Registers the observable instrument of `name` with the meter on its first series.
    fn observe(&self, name: &str, gauge: bool) {
        let mut known = self.known();
        if known.observed.contains_key(name) {
            return;
        }
        let (unit, description) = described(&known, name);
        let registry = Arc::clone(&self.registry);
        let series = name.to_owned();
        let instrument: Box<dyn std::any::Any + Send> = match gauge {
            false => Box::new(
                self.meter
                    .u64_observable_counter(name.to_owned())
                    .with_description(description)
                    .with_unit(unit)
                    .with_callback(move |observer| {
                        registry.visit_counters(|key, value| {
                            if key.name() == series {
                                observer.observe(value.load(Ordering::Relaxed), &attributes(key));
                            }
                        });
                    })
                    .build(),
            ),
            true => Box::new(
                self.meter
                    .f64_observable_gauge(name.to_owned())
                    .with_description(description)
                    .with_unit(unit)
                    .with_callback(move |observer| {
                        registry.visit_gauges(|key, value| {
                            if key.name() == series {
                                let value = f64::from_bits(value.load(Ordering::Relaxed));
                                observer.observe(value, &attributes(key));
                            }
                        });
                    })
                    .build(),
            ),
        };
        known.observed.insert(name.to_owned(), instrument);
    }

    fn histogram(&self, name: &str) -> opentelemetry::metrics::Histogram<f64> {
        let mut known = self.known();
        if let Some(histogram) = known.histograms.get(name) {
            return histogram.clone();
        }
        let (unit, description) = described(&known, name);
        let histogram = self
            .meter
            .f64_histogram(name.to_owned())
            .with_description(description)
            .with_unit(unit)
            .with_boundaries(self.buckets.clone())
            .build();
        known.histograms.insert(name.to_owned(), histogram.clone());
        histogram
    }
}

/// A metric's unit (as OpenTelemetry spells it) and description, as described.
fn described(known: &Known, name: &str) -> (String, String) {
    match known.descriptions.get(name) {
        Some((unit, description)) => (
            unit.map(otel_unit).unwrap_or_default().to_owned(),
            description.to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

/// The UCUM code OpenTelemetry expects for a `metrics` unit.
fn otel_unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Seconds => "s",
        Unit::Milliseconds => "ms",
        Unit::Microseconds => "us",
        Unit::Nanoseconds => "ns",
        Unit::Bytes => "By",
        Unit::Percent => "%",
        _ => "1",
    }
}

/// A series' labels as attributes.
fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .map(|label| KeyValue::new(label.key().to_owned(), label.value().to_owned()))
        .collect()
}

/// One histogram series: its samples go to the OpenTelemetry histogram with its labels.
struct SeriesHistogram {
    histogram: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl HistogramFn for SeriesHistogram {
    fn record(&self, value: f64) {
        self.histogram.record(value, &self.attributes);
    }
}

impl Recorder for OtlpRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        self.observe(key.name(), false);
        self.registry
            .get_or_create_counter(key, |counter| Counter::from_arc(Arc::clone(counter)))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        self.observe(key.name(), true);
        self.registry
            .get_or_create_gauge(key, |gauge| Gauge::from_arc(Arc::clone(gauge)))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(SeriesHistogram {
            histogram: self.histogram(key.name()),
            attributes: attributes(key),
        }))
    }
}
