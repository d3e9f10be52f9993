//! Command-line interface: `serve`, and the operator commands `stats` and
//! `health` (a small gRPC client over the Unix socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use finderd_proto::v1 as pb;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{self, Config, Freshness, IndexLimits, RequestLimits};

/// How long `stats` and `health` wait for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "finderd",
    version,
    about = "Warm, inotify-validated directory listings for Python imports, over gRPC on a Unix socket."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Print the daemon's counters (the Stats RPC).
    Stats(StatsArgs),
    /// Exit 0 if the daemon answers grpc.health.v1 with SERVING.
    Health(SocketArg),
}

#[derive(Debug, Args)]
pub struct SocketArg {
    /// Unix socket [default: $FINDERD_SOCKET, $XDG_RUNTIME_DIR/finderd/finderd.sock,
    /// /run/finderd/finderd.sock as root, else /tmp/finderd-$UID/finderd.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket path, made absolute: the generation file's path is sent to
    /// clients, whose working directory is not ours.
    pub fn path(&self) -> PathBuf {
        let path = self
            .socket
            .clone()
            .unwrap_or_else(config::default_socket_path_from_env);
        std::path::absolute(&path).unwrap_or(path)
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Log level or filter (as RUST_LOG; overrides it) [default: RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Socket file mode, octal [default: 666 in /run/finderd, else 600]
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    pub socket_mode: Option<u32>,
    /// Largest request accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Most sys.path entries in one Snapshot.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_SYS_PATH_ENTRIES)]
    pub max_sys_path_entries: usize,
    /// Most paths in one Lookup.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_LOOKUP_PATHS)]
    pub max_lookup_paths: usize,
    /// Most entries in a served directory; larger ones are NOT_SERVED.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_ENTRIES_PER_DIRECTORY)]
    pub max_entries_per_directory: usize,
    /// Most inotify watches this daemon holds [default: the kernel's limit]
    #[arg(long, value_name = "N")]
    pub max_watches: Option<usize>,
    /// Slots in the generation file.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_GENERATION_SLOTS)]
    pub generation_slots: u32,
    /// How long clients may trust the generation file after the daemon last
    /// read its change queue, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = config::DEFAULT_LEASE.as_millis() as u64)]
    pub lease_ms: u64,
    /// Keep the generation file's lease fresh for this long after a request, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_ACTIVE_WINDOW.as_secs())]
    pub active_window_secs: u64,
    /// On SIGTERM, wait at most this long for in-flight requests, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = config::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64)]
    pub drain_timeout_ms: u64,
}

fn parse_octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode (e.g. 600)"))
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        Config {
            socket: self.socket.path(),
            socket_mode: self.socket_mode,
            requests: RequestLimits {
                max_request_bytes: self.max_request_bytes,
                max_sys_path_entries: self.max_sys_path_entries,
                max_lookup_paths: self.max_lookup_paths,
            },
            index: IndexLimits {
                max_entries_per_directory: self.max_entries_per_directory,
                max_watches: self.max_watches,
            },
            freshness: Freshness {
                slots: self.generation_slots,
                lease: Duration::from_millis(self.lease_ms),
                active_window: Duration::from_secs(self.active_window_secs),
            },
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        }
    }
}

/// A channel to the daemon on a Unix socket (the URI only names the
/// `:authority`, `localhost`, as the C client sends it).
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_owned();
    let shown = socket.display().to_string();
    Endpoint::from_static("http://localhost")
        .connect_timeout(CLIENT_TIMEOUT)
        .timeout(CLIENT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to finderd at {shown}"))
}

pub async fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let socket = args.socket.path();
    let mut client = pb::finder_client::FinderClient::new(connect(&socket).await?);
    let reply = client
        .stats(pb::StatsRequest {})
        .await
        .context("Stats RPC failed")?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats_json(&reply))?);
    } else {
        print!("{}", stats_table(&reply));
    }
    Ok(())
}

pub async fn health(args: &SocketArg) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let socket = args.path();
    let mut client = HealthClient::new(connect(&socket).await?);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("health check failed")?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        bail!(
            "finderd at {} is {}",
            socket.display(),
            status.as_str_name()
        );
    }
    println!("SERVING");
    Ok(())
}

fn histogram_json(histogram: Option<&pb::Histogram>) -> serde_json::Value {
    let h = histogram.copied().unwrap_or_default();
    serde_json::json!({
        "count": h.count, "sum_us": h.sum_us, "max_us": h.max_us, "p50_us": h.p50_us, "p99_us": h.p99_us,
    })
}

fn stats_json(r: &pb::StatsReply) -> serde_json::Value {
    serde_json::json!({
        "daemon_version": r.daemon_version, "uptime_ms": r.uptime_ms, "pid": r.pid,
        "roots": r.roots, "directories": r.directories, "entries": r.entries, "index_bytes": r.index_bytes,
        "watches": r.watches, "inotify_events": r.inotify_events, "overflows": r.overflows,
        "degraded_roots": r.degraded_roots,
        "snapshot_requests": r.snapshot_requests, "lookup_requests": r.lookup_requests,
        "directories_served": r.directories_served, "directories_not_served": r.directories_not_served,
        "directories_unchanged": r.directories_unchanged, "hits": r.hits, "misses": r.misses,
        "rejected_requests": r.rejected_requests, "crawls_sync": r.crawls_sync, "crawls_uring": r.crawls_uring,
        "barrier_latency": histogram_json(r.barrier_latency.as_ref()),
        "refresh_latency": histogram_json(r.refresh_latency.as_ref()),
        "request_latency": histogram_json(r.request_latency.as_ref()),
    })
}

fn stats_table(r: &pb::StatsReply) -> String {
    let rows: [(&str, String); 21] = [
        ("daemon version", r.daemon_version.clone()),
        ("pid", r.pid.to_string()),
        ("uptime", format!("{:.1} s", r.uptime_ms as f64 / 1000.0)),
        ("roots", r.roots.to_string()),
        ("directories", r.directories.to_string()),
        ("entries", r.entries.to_string()),
        ("index bytes", r.index_bytes.to_string()),
        ("watches", r.watches.to_string()),
        ("inotify events", r.inotify_events.to_string()),
        ("overflows", r.overflows.to_string()),
        ("degraded roots", r.degraded_roots.to_string()),
        ("snapshot requests", r.snapshot_requests.to_string()),
        ("lookup requests", r.lookup_requests.to_string()),
        ("rejected requests", r.rejected_requests.to_string()),
        ("dirs served", r.directories_served.to_string()),
        ("dirs not served", r.directories_not_served.to_string()),
        ("dirs unchanged", r.directories_unchanged.to_string()),
        ("hits", r.hits.to_string()),
        ("misses", r.misses.to_string()),
        ("crawls sync", r.crawls_sync.to_string()),
        ("crawls io_uring", r.crawls_uring.to_string()),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{name:<20} {value}\n"));
    }
    out.push_str(&format!(
        "\n{:<20} {:>10} {:>10} {:>10} {:>10}\n",
        "latency (us)", "count", "p50", "p99", "max"
    ));
    for (name, histogram) in [
        ("barrier", &r.barrier_latency),
        ("refresh", &r.refresh_latency),
        ("request", &r.request_latency),
    ] {
        let h = histogram.unwrap_or_default();
        out.push_str(&format!(
            "{name:<20} {:>10} {:>10} {:>10} {:>10}\n",
            h.count, h.p50_us, h.p99_us, h.max_us
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal("600"), Ok(0o600));
        assert_eq!(parse_octal("0666"), Ok(0o666));
        assert!(parse_octal("888").is_err());
        assert!(parse_octal("7777").is_err());
    }

    #[test]
    fn table_has_every_histogram() {
        let table = stats_table(&pb::StatsReply::default());
        for word in ["barrier", "refresh", "request", "inotify events", "watches"] {
            assert!(table.contains(word), "{word} missing from\n{table}");
        }
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
