//! Report: at the end of a run, the directories and compiled files it
//! used; the daemon learns a plan per (peer uid, program key) so that the
//! program's next Snapshot brings all of them (`crate::plan`).

use std::sync::Arc;

use bytes::Bytes;
use finderd_proto::v1 as pb;

use super::check::{check_report, non_canonical_reason};
use super::context::{Handled, Mode};
use super::Finder;
use crate::namespace;
use crate::plan::PlanKey;
use crate::policy::PeerInfo;

pub fn report(
    finder: &Finder,
    peer: &PeerInfo,
    request: &pb::ReportRequest,
    _mode: Mode,
) -> Handled {
    let learning = &finder.learning;
    check_report(learning.plans.config(), request)?;
    // No credentials: nobody to learn for.
    let Some(peer) = peer else {
        return Ok(Bytes::new());
    };
    let key = PlanKey {
        uid: peer.uid,
        // Copies: a plan must not keep the whole request body alive.
        key: Bytes::copy_from_slice(&request.program_key),
    };
    let directories = owned_canonical(&request.directories);
    let files = owned_canonical(&request.bytecode_files);
    let adapted = learning.plans.report(key.clone(), &directories, &files);
    tracing::debug!(
        uid = peer.uid,
        directories = directories.len(),
        files = files.len(),
        added = adapted.added,
        dropped = adapted.dropped,
        refused = adapted.refused,
        "plan reported"
    );
    // Warmed as the reporting peer, in its view (`crate::namespace`): a
    // peer in another mount namespace that passed no view names paths the
    // daemon would read in its own.
    let reporter = Some(Arc::clone(peer));
    let has_view = namespace::index_for(&finder.views, &reporter, request.mount_namespace).is_ok();
    if (adapted.added > 0 || !files.is_empty()) && has_view {
        learning.keeper.warm(key, Arc::clone(peer));
    }
    Ok(Bytes::new())
}

/// The canonical paths of a request, copied out of its buffer.
fn owned_canonical(paths: &[Bytes]) -> Vec<Bytes> {
    paths
        .iter()
        .filter(|p| non_canonical_reason(p).is_none())
        .map(|p| Bytes::copy_from_slice(p))
        .collect()
}
