//! Logging and tracing: `RUST_LOG` filters (default [`DEFAULT_FILTER`]); the `log_format` setting
//! (`VOIDVM_LOG_FORMAT=json`) writes JSON lines.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// What is logged when `RUST_LOG` is not set. actix-http's HTTP/1 dispatcher logs at ERROR what a
/// client did wrong (a head it cannot parse, a body cut short, a peer gone mid-write): each is
/// answered in the envelope by `api::head_guard` or ends only that connection, and the errors of
/// VoidVM's own streamed bodies are logged where they happen, so its lines would only let any
/// client write ERROR lines into the server's log. Its WebSocket codec does the same with a
/// client's protocol errors (a fragmented control frame), which close that socket.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,actix_server=warn,actix_http::h1::dispatcher=off,actix_http::ws::codec=off";

/// Installs the global subscriber, in the format `VOIDVM_LOG_FORMAT` names; a second call (tests)
/// does nothing.
pub fn init() {
    let json = std::env::var("VOIDVM_LOG_FORMAT").is_ok_and(|f| f == "json");
    init_as(if json {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
}

/// Installs the global subscriber writing `format` (the server's `log_format` setting).
pub fn init_as(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = format == LogFormat::Json;
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}

/// An error and each of its causes on one line ("a: b: c"), for a log field. (Debug output of an
/// `anyhow::Error` spans many lines, with a backtrace when `RUST_BACKTRACE` is set.) A cause whose
/// text its error already ends with, as some libraries' errors do, is not said twice.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("the relay stopped")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause_once() {
        let e = Outer(std::io::Error::other("broken pipe"));
        assert_eq!(chain(&e), "the relay stopped: broken pipe");
        let any = anyhow::Error::new(e).context("publishing paused");
        assert_eq!(
            chain(any.as_ref()),
            "publishing paused: the relay stopped: broken pipe"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_its_error_already_quotes_is_said_once() {
        let e = Repeats(std::io::Error::other("database \"x\" does not exist"));
        assert_eq!(
            chain(&e),
            "error returned from database: database \"x\" does not exist"
        );
    }
}
