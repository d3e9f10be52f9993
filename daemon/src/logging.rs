//! `tracing` to stderr in a form that reads well in journald: one line per
//! event with key=value fields, no colours unless stderr is a terminal;
//! under systemd's journal (`JOURNAL_STREAM`) no timestamps (it keeps its
//! own) and a `<N>` syslog priority prefix per line, so `journalctl -p
//! warning` works. The level can be changed while running (SIGHUP with a
//! new `log_level`).

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log level {level:?}: {source}")]
    Filter {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot change the log level: {0}")]
    Reload(#[from] reload::Error),
}

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    default_level: &'static str,
}

impl LogLevel {
    /// `level` (a `RUST_LOG`-style filter) wins over `RUST_LOG`, which wins
    /// over `default_level`.
    pub fn set(&self, level: Option<&str>) -> Result<(), LoggingError> {
        self.handle.reload(filter(level, self.default_level)?)?;
        Ok(())
    }
}

fn filter(level: Option<&str>, default_level: &str) -> Result<EnvFilter, LoggingError> {
    match level {
        Some(level) => EnvFilter::try_new(level).map_err(|source| LoggingError::Filter {
            level: level.to_string(),
            source,
        }),
        None => {
            Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        }
    }
}

/// Installs the subscriber.
pub fn init(level: Option<&str>, default_level: &'static str) -> Result<LogLevel, LoggingError> {
    let (filter, handle) = reload::Layer::new(filter(level, default_level)?);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if journal {
        let format = format.event_format(JournalPriority(
            tracing_subscriber::fmt::format()
                .with_target(false)
                .without_time(),
        ));
        registry.with(format).init();
    } else {
        registry.with(format).init();
    }
    Ok(LogLevel {
        handle,
        default_level,
    })
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>`
/// debug), which journald reads from a service's stderr.
struct JournalPriority<F>(F);

/// The syslog priority of a tracing level.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
