//! The proxy's own log on stderr (DESIGN §9 "Logs"): `text` or `json` (`--log-format`,
//! `log.format`), the level from `NDOTS_LOG` (an `EnvFilter` directive, default `info`).
//!
//! Text carries ANSI colours only when stderr is a terminal: `kubectl logs`, Loki and files get
//! plain lines. JSON is one object per line with `timestamp` (RFC 3339, UTC), `level`,
//! `target`, `message` and the event's fields, for log shippers that parse JSON.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::event::Timestamp;

/// The environment variable that sets the log level.
pub const ENV: &str = "NDOTS_LOG";

/// Install the process's subscriber once; later calls (tests embedding several proxies) keep
/// the first.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(ENV).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(Json).try_init(),
    };
}

/// One JSON object per event.
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_line(event))
    }
}

/// The object for one event.
pub fn json_line(event: &Event<'_>) -> Value {
    let mut map = Map::new();
    let mut ts = String::new();
    crate::querylog::format_rfc3339(Timestamp::now(), &mut ts);
    map.insert("timestamp".into(), Value::String(ts));
    let meta = event.metadata();
    map.insert(
        "level".into(),
        Value::String(meta.level().as_str().to_ascii_lowercase()),
    );
    map.insert("target".into(), Value::String(meta.target().to_string()));
    event.record(&mut Fields(&mut map));
    Value::Object(map)
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}
