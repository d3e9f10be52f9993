//! Command-line interface: `serve`, and the operator commands `stats` and
//! `health` (a small gRPC client over the Unix socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use finderd_proto::v1 as pb;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{self, ConfigSource, Settings};

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
    Serve(Box<ServeArgs>),
    /// Print the daemon's counters (the Stats RPC).
    Stats(StatsArgs),
    /// Exit 0 if the daemon answers grpc.health.v1 with SERVING.
    Health(SocketArg),
    /// Replay the stat-family calls and opens of an `strace -f` log with
    /// system calls and through io_uring (batches 1, 8, 32, 128), and print
    /// the per-call cost of each way.
    Replay(ReplayArgs),
    /// Run a command under `strace -f` and tell whether finderd would help
    /// it: lookups per kind, ENOENT share, directories stat'ed most, time.
    Profile(ProfileArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A log written by `strace -f -o FILE` (with or without -tt, -T, -y).
    #[arg(value_name = "STRACE_LOG")]
    pub log: PathBuf,
    /// Rounds per way; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rounds: usize,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The command and its arguments (after `--`).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
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
    /// TOML config file; its keys are the flags' names with `_` for `-`
    /// (flags win; SIGHUP re-reads it) [default: /etc/finderd/finderd.toml
    /// when it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            file: config::config_file(self.config.as_deref()),
            flags: self.settings.clone(),
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
        let mut json = stats_json(&reply);
        add_learned_json(&mut json, &reply);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if reply.own_figures_only {
        print!("{}", own_table(&reply));
    } else {
        print!("{}", stats_table(&reply));
        print!("{}", learned_table(&reply));
    }
    Ok(())
}

/// The figures a peer other than root or the daemon's user gets: its own.
fn own_table(r: &pb::StatsReply) -> String {
    let mut out = format!(
        "figures of peer uid {} only (root and the daemon's own user see the daemon's)\n\n",
        r.peer_uid
    );
    for (name, value) in [
        ("daemon version", r.daemon_version.clone()),
        ("pid", r.pid.to_string()),
        ("uptime", format!("{:.1} s", r.uptime_ms as f64 / 1000.0)),
        ("requests", r.requests.to_string()),
        ("rejected requests", r.rejected_requests.to_string()),
        ("dirs served", r.directories_served.to_string()),
        ("dirs not served", r.directories_not_served.to_string()),
        ("dirs unchanged", r.directories_unchanged.to_string()),
        ("directories kept", r.directories.to_string()),
        ("entries kept", r.entries.to_string()),
        ("index bytes", r.index_bytes.to_string()),
        ("watches", r.watches.to_string()),
        ("bytes in flight", r.inflight_bytes.to_string()),
        ("evictions", r.evictions.to_string()),
        ("over a limit", r.over_limit.to_string()),
    ] {
        out.push_str(&format!("{name:<20} {value}\n"));
    }
    out.push_str("\nlimits (0: none)\n");
    for limit in &r.limits {
        out.push_str(&format!("  {:<28} {}\n", limit.name, limit.value));
    }
    out
}

/// Plans, compiled files and deadlines in `--json`: a `plans` object, and
/// `slow` on each filesystem.
fn add_learned_json(json: &mut serde_json::Value, l: &pb::StatsReply) {
    json["plans"] = serde_json::json!({
        "plans": l.plans, "plan_directories": l.plan_directories, "plan_files": l.plan_files,
        "reports": l.reports, "planned_snapshots": l.planned_snapshots,
        "planned_directories_served": l.planned_directories_served,
        "plans_evicted": l.plans_evicted, "plan_entries_dropped": l.plan_entries_dropped,
        "plans_loaded": l.plans_loaded, "state_writes": l.state_writes,
        "state_write_errors": l.state_write_errors,
        "cached_files": l.cached_files, "cached_bytes": l.cached_bytes,
        "cached_files_served": l.cached_files_served, "cached_bytes_served": l.cached_bytes_served,
        "compiled_reads_uring": l.compiled_reads_uring, "compiled_reads_sync": l.compiled_reads_sync,
        "compiled_reads_changed": l.compiled_reads_changed, "cached_evictions": l.cached_evictions,
        "slow_filesystems": l.slow_devices.len(), "slow_devices": l.slow_devices,
        "deadline_replies": l.deadline_replies, "being_indexed": l.being_indexed,
    });
    if let Some(filesystems) = json["filesystems"].as_array_mut() {
        for filesystem in filesystems {
            let device = filesystem["device"].as_u64().unwrap_or(u64::MAX);
            filesystem["slow"] = l.slow_devices.contains(&device).into();
        }
    }
}

fn learned_table(l: &pb::StatsReply) -> String {
    let slow: Vec<String> = l.slow_devices.iter().map(u64::to_string).collect();
    let rows: [(&str, String); 19] = [
        ("plans", l.plans.to_string()),
        ("plan directories", l.plan_directories.to_string()),
        ("plan files", l.plan_files.to_string()),
        ("reports", l.reports.to_string()),
        ("planned snapshots", l.planned_snapshots.to_string()),
        (
            "planned dirs served",
            l.planned_directories_served.to_string(),
        ),
        ("plans evicted", l.plans_evicted.to_string()),
        ("plan entries dropped", l.plan_entries_dropped.to_string()),
        ("plans loaded", l.plans_loaded.to_string()),
        (
            "state writes",
            format!("{} ({} failed)", l.state_writes, l.state_write_errors),
        ),
        (
            "cached files",
            format!("{} ({} bytes)", l.cached_files, l.cached_bytes),
        ),
        (
            "cached served",
            format!(
                "{} ({} bytes)",
                l.cached_files_served, l.cached_bytes_served
            ),
        ),
        (
            "compiled reads",
            format!(
                "{} io_uring, {} sync",
                l.compiled_reads_uring, l.compiled_reads_sync
            ),
        ),
        ("compiled changed", l.compiled_reads_changed.to_string()),
        ("cache evictions", l.cached_evictions.to_string()),
        ("slow filesystems", l.slow_devices.len().to_string()),
        ("slow devices", slow.join(" ")),
        ("deadline replies", l.deadline_replies.to_string()),
        ("being indexed", l.being_indexed.to_string()),
    ];
    let mut out = String::from("\nlearned plans and compiled files\n");
    for (name, value) in rows {
        out.push_str(&format!("  {name:<22} {value}\n"));
    }
    out
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
    let limits: serde_json::Map<String, serde_json::Value> = r
        .limits
        .iter()
        .map(|l| (l.name.clone(), l.value.into()))
        .collect();
    let filesystems: Vec<serde_json::Value> = r
        .filesystems
        .iter()
        .map(|f| {
            serde_json::json!({
                "filesystem": f.filesystem, "device": f.device, "engine": f.engine,
                "reason": f.reason, "sync_ns_per_entry": f.sync_ns_per_entry,
                "uring_ns_per_entry": f.uring_ns_per_entry, "crawls": f.crawls, "polled": f.polled,
            })
        })
        .collect();
    serde_json::json!({
        "daemon_version": r.daemon_version, "uptime_ms": r.uptime_ms, "pid": r.pid,
        "roots": r.roots, "directories": r.directories, "entries": r.entries, "index_bytes": r.index_bytes,
        "watches": r.watches, "inotify_events": r.inotify_events, "overflows": r.overflows,
        "degraded_roots": r.degraded_roots, "polled_roots": r.polled_roots,
        "mtime_checks": r.mtime_checks, "mtime_recrawls": r.mtime_recrawls, "evictions": r.evictions,
        "snapshot_requests": r.snapshot_requests, "lookup_requests": r.lookup_requests,
        "directories_served": r.directories_served, "directories_not_served": r.directories_not_served,
        "directories_unchanged": r.directories_unchanged, "hits": r.hits, "misses": r.misses,
        "rejected_requests": r.rejected_requests, "peer_limit_rejections": r.peer_limit_rejections,
        "open_connections": r.open_connections,
        "connection_limit_rejections": r.connection_limit_rejections,
        "crawls_sync": r.crawls_sync, "crawls_uring": r.crawls_uring, "io_uring": r.io_uring,
        "filesystems": filesystems, "limits": limits,
        "barrier_latency": histogram_json(r.barrier_latency.as_ref()),
        "refresh_latency": histogram_json(r.refresh_latency.as_ref()),
        "request_latency": histogram_json(r.request_latency.as_ref()),
        "own_figures_only": r.own_figures_only, "peer_uid": r.peer_uid, "requests": r.requests,
        "inflight_bytes": r.inflight_bytes, "over_limit": r.over_limit,
    })
}

fn stats_table(r: &pb::StatsReply) -> String {
    let rows: [(&str, String); 30] = [
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
        ("polled roots", r.polled_roots.to_string()),
        ("mtime checks", r.mtime_checks.to_string()),
        ("mtime recrawls", r.mtime_recrawls.to_string()),
        ("evictions", r.evictions.to_string()),
        ("snapshot requests", r.snapshot_requests.to_string()),
        ("lookup requests", r.lookup_requests.to_string()),
        ("rejected requests", r.rejected_requests.to_string()),
        ("peer limit refusals", r.peer_limit_rejections.to_string()),
        ("open connections", r.open_connections.to_string()),
        (
            "connections refused",
            r.connection_limit_rejections.to_string(),
        ),
        ("dirs served", r.directories_served.to_string()),
        ("dirs not served", r.directories_not_served.to_string()),
        ("dirs unchanged", r.directories_unchanged.to_string()),
        ("hits", r.hits.to_string()),
        ("misses", r.misses.to_string()),
        ("crawls sync", r.crawls_sync.to_string()),
        ("crawls io_uring", r.crawls_uring.to_string()),
        ("io_uring", r.io_uring.clone()),
        ("limits", String::new()),
    ];
    let mut out = String::new();
    for (name, value) in &rows[..rows.len() - 1] {
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
    out.push_str(&filesystems_table(&r.filesystems));
    out.push_str("\nlimits (0: none)\n");
    for limit in &r.limits {
        out.push_str(&format!("  {:<28} {}\n", limit.name, limit.value));
    }
    out
}

fn filesystems_table(filesystems: &[pb::FilesystemEngine]) -> String {
    let mut out = format!(
        "\n{:<12} {:>8} {:<6} {:<22} {:>8} {:>8} {:>7} {}\n",
        "filesystem", "device", "engine", "why", "sync ns", "uring ns", "crawls", "polled"
    );
    for f in filesystems {
        out.push_str(&format!(
            "{:<12} {:>8} {:<6} {:<22} {:>8} {:>8} {:>7} {}\n",
            f.filesystem,
            f.device,
            f.engine,
            f.reason,
            f.sync_ns_per_entry,
            f.uring_ns_per_entry,
            f.crawls,
            if f.polled { "yes" } else { "no" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_every_histogram() {
        let table = stats_table(&pb::StatsReply::default());
        for word in ["barrier", "refresh", "request", "inotify events", "watches"] {
            assert!(table.contains(word), "{word} missing from\n{table}");
        }
    }

    #[test]
    fn learned_fields_show_in_table_and_json() {
        let reply = pb::StatsReply {
            plans: 4,
            slow_devices: vec![42],
            filesystems: vec![pb::FilesystemEngine {
                device: 42,
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = learned_table(&reply);
        assert!(table.contains("plans                  4"), "{table}");
        assert!(table.contains("slow devices           42"), "{table}");
        let mut json = stats_json(&reply);
        add_learned_json(&mut json, &reply);
        assert_eq!(json["plans"]["plans"], 4);
        assert_eq!(json["plans"]["slow_filesystems"], 1);
        assert_eq!(json["filesystems"][0]["slow"], true);
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
