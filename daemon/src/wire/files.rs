//! Compiled files a learned plan names, chosen for one Snapshot: those in a
//! `__pycache__` on a slow filesystem whose listing this peer may have,
//! listed as a regular file (not a symlink), whose bytes the cache holds
//! at exactly the identity that listing names and this peer may read
//! (`crate::policy::gate::may_read`), within the byte budget.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use finderd_proto::v1 as pb;

use super::check::non_canonical_reason;
use super::context::{Answer, Context, Mode, Unanswered};
use crate::bytecode::{is_compiled_file, CompiledFiles, Identity, Lookup, Wanted};
use crate::index::{Listing, Role};
use crate::plan::PlanView;
use crate::policy::{gate, PeerInfo};
use crate::refresh::{parent_of, Kind};
use crate::walk::Root;

/// One compiled file chosen for a reply, and the listing that names it.
pub struct Chosen {
    pub parent: Arc<Listing>,
    pub message: pb::CachedFile,
}

/// A planned compiled file as the current listing of its directory names it.
pub struct Candidate {
    parent: Arc<Listing>,
    path: Bytes,
    pub wanted: Wanted,
}

/// The plan's compiled files this peer may read, within `budget` bytes.
/// Inline, a file not read yet sends the request to the blocking pool; at
/// the deadline it is left out.
pub fn for_snapshot(
    context: &Context,
    plan: &PlanView,
    budget: u64,
) -> Result<Vec<Chosen>, Unanswered> {
    let files = &context.finder.learning.files;
    if plan.files.is_empty() || budget == 0 || !files.enabled() {
        return Ok(Vec::new());
    }
    let candidates = candidates(context.index().root(), plan, |parent| {
        Ok(match context.ask(parent, 0, Role::Other)? {
            Answer::Listed(listing) if context.is_slow(&listing) => Some(listing),
            _ => None,
        })
    })?;
    let mut found: Vec<Lookup> = (candidates.iter())
        .map(|c| files.lookup(&c.wanted.identity))
        .collect();
    if found.contains(&Lookup::Missing) {
        match context.mode {
            Mode::Inline => return Err(Unanswered::NeedsFilesystem),
            Mode::Deadline { .. } => {}
            Mode::Blocking => {
                fill(files, &candidates, &found);
                for (candidate, found) in candidates.iter().zip(found.iter_mut()) {
                    if *found == Lookup::Missing {
                        *found = files.lookup(&candidate.wanted.identity);
                    }
                }
            }
        }
    }
    Ok(choose(candidates, found, context.peer, budget))
}

/// Reads the candidates the cache does not hold.
pub fn fill(files: &CompiledFiles, candidates: &[Candidate], found: &[Lookup]) {
    let missing: Vec<Wanted> = (candidates.iter().zip(found))
        .filter(|(_, found)| **found == Lookup::Missing)
        .map(|(c, _)| c.wanted.clone())
        .collect();
    files.fill(&missing);
}

/// Each planned compiled file whose directory `listing_of` gives (for this
/// peer, on a slow filesystem, beneath `root`), listed there as a regular
/// file.
pub fn candidates(
    root: &Root,
    plan: &PlanView,
    mut listing_of: impl FnMut(&Bytes) -> Result<Option<Arc<Listing>>, Unanswered>,
) -> Result<Vec<Candidate>, Unanswered> {
    let mut parents: HashMap<Bytes, Option<Arc<Listing>>> = HashMap::new();
    let mut candidates = Vec::new();
    for path in &plan.files {
        if non_canonical_reason(path).is_some() || path.as_ref() == b"/" {
            continue;
        }
        let parent = Bytes::copy_from_slice(parent_of(path));
        let name = path.slice(parent.len() + usize::from(parent.as_ref() != b"/")..);
        if !is_compiled_file(&parent, &name) {
            continue;
        }
        let listing = match parents.get(&parent) {
            Some(listing) => listing.clone(),
            None => {
                let listing = listing_of(&parent)?;
                parents.insert(parent.clone(), listing.clone());
                listing
            }
        };
        let Some(listing) = listing else { continue };
        if let Some(wanted) = wanted(root, &listing, name) {
            candidates.push(Candidate {
                parent: listing,
                path: path.clone(),
                wanted,
            });
        }
    }
    Ok(candidates)
}

/// The file `name` as `listing` names it: a regular file, not a symlink.
fn wanted(root: &Root, listing: &Listing, name: Bytes) -> Option<Wanted> {
    let at = (listing.entries)
        .binary_search_by(|e| e.name.as_ref().cmp(&name))
        .ok()?;
    let entry = &listing.entries[at];
    if entry.kind != Kind::File || entry.link {
        return None;
    }
    let dir = listing.access.listed?;
    Some(Wanted {
        root: root.clone(),
        dir: listing.real.clone(),
        dir_id: (dir.dev, dir.ino),
        name,
        identity: Identity {
            // The file's own device, not its directory's: they differ on
            // overlayfs (a lower layer's files), where the read's fstat
            // would never match the directory's device.
            dev: entry.stat.device(),
            ino: entry.stat.ino,
            ctime_ns: entry.stat.ctime_ns,
            mtime_ns: entry.stat.mtime_ns,
            size: entry.stat.size,
        },
    })
}

/// The files this peer may read, in plan order, while they fit `budget`
/// (a file that does not fit is skipped; smaller ones after it may fit).
fn choose(
    candidates: Vec<Candidate>,
    found: Vec<Lookup>,
    peer: &PeerInfo,
    budget: u64,
) -> Vec<Chosen> {
    let mut spent = 0u64;
    let mut chosen = Vec::new();
    for (candidate, found) in candidates.into_iter().zip(found) {
        let Lookup::Hit { data, facts } = found else {
            continue;
        };
        let size = data.len() as u64;
        if !gate::may_read(peer, &candidate.parent.access, &facts) || spent + size > budget {
            continue;
        }
        spent += size;
        let identity = candidate.wanted.identity;
        chosen.push(Chosen {
            parent: candidate.parent,
            message: pb::CachedFile {
                path: candidate.path,
                data,
                mtime_ns: identity.mtime_ns,
                size: identity.size,
            },
        });
    }
    chosen
}
