//! Stats: counters and gauges for operators (`finderd stats`). Served
//! whole to root and to the daemon's own user; any other peer gets the
//! daemon's identity and limits and nothing about what the daemon holds or
//! did for others: counters move with every user's requests, and gauges
//! (entries, bytes, watches) would count a private directory's names.

use bytes::Bytes;
use finderd_proto::v1 as pb;
use prost::Message;

use super::context::{Handled, Mode};
use super::Finder;
use crate::policy::limits::PeerLimits;
use crate::policy::quota::Quotas;
use crate::policy::{gate, PeerInfo};

pub fn stats(
    finder: &Finder,
    peer: &PeerInfo,
    _request: &pb::StatsRequest,
    _mode: Mode,
) -> Handled {
    let mut everything = finder
        .stats
        .reply(finder.views.gauges(), finder.views.host().engine_report());
    place_figures(&mut everything, &finder.peers);
    let reply = if gate::sees_everything(peer) {
        let mut reply = everything;
        let slow = finder
            .views
            .host()
            .engines()
            .slow_devices(finder.learning.slow_stat_ns);
        finder.learning.fill_stats(&mut reply, slow);
        reply
    } else {
        own_figures(everything, peer, &finder.quotas)
    };
    Ok(Bytes::from(reply.encode_to_vec()))
}

/// Connections held and places refused, all uids together: kept by the
/// per-uid limiters (`policy::limits`), not by `Stats`.
fn place_figures(reply: &mut pb::StatsReply, peers: &PeerLimits) {
    let figures = peers.figures();
    reply.open_connections = figures.open_connections;
    reply.connection_limit_rejections = figures.connections_refused;
    reply.peer_limit_rejections = figures.requests_refused;
}

/// What any peer may know: the daemon's identity and limits, and its own
/// figures.
fn own_figures(everything: pb::StatsReply, peer: &PeerInfo, quotas: &Quotas) -> pb::StatsReply {
    let uid = peer.as_ref().map(|peer| peer.uid);
    let usage = quotas.of(uid);
    pb::StatsReply {
        daemon_version: everything.daemon_version,
        uptime_ms: everything.uptime_ms,
        pid: everything.pid,
        io_uring: everything.io_uring,
        limits: everything.limits,
        own_figures_only: true,
        peer_uid: uid.unwrap_or(u32::MAX),
        directories: usage.nodes,
        entries: usage.entries,
        index_bytes: usage.index_bytes,
        watches: usage.watches,
        requests: usage.requests,
        directories_served: usage.served,
        directories_not_served: usage.not_served,
        directories_unchanged: usage.unchanged,
        rejected_requests: usage.rejected,
        evictions: usage.evicted,
        inflight_bytes: usage.inflight_bytes,
        over_limit: usage.over_limit,
        ..Default::default()
    }
}
