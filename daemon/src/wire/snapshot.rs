//! Snapshot: the start-up answer. One `Directory` per `sys_path` entry, in
//! request order; then, when the (peer uid, program key) has a learned
//! plan, every planned directory this peer may list and the compiled files
//! it may read ([`files`](super::files)); otherwise package directories of
//! the served entries within the client's prefetch budget.
//!
//! A path asked twice in one reply is answered once: its later occurrences
//! are UNCHANGED at the first one's generation (the client holds it by
//! then), so a `sys.path` that names one large directory many times costs
//! one listing. A reply never grows past `max_reply_bytes`: a requested
//! directory that would not fit is NOT_SERVED (the client asks the
//! filesystem), planned and prefetched ones are left out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use finderd_proto::v1 as pb;
use finderd_proto::v1::PROTOCOL_VERSION;
use prost::Message;

use super::check::{check_snapshot, is_package_name, non_canonical_reason};
use super::context::{Answer, Context, Handled, Mode, Unanswered};
use super::files;
use super::reply::{
    encode_answer, Reply, SNAPSHOT_DIRECTORIES_FIELD, SNAPSHOT_FILES_FIELD, SNAPSHOT_PLANNED_FIELD,
};
use super::Finder;
use crate::index::{Listing, Role};
use crate::plan::{PlanKey, PlanView};
use crate::policy::PeerInfo;
use crate::refresh::{join, Kind};
use crate::stats::{bump, Stats};

pub fn snapshot(
    finder: &Finder,
    peer: &PeerInfo,
    request: &pb::SnapshotRequest,
    mode: Mode,
) -> Handled {
    check_snapshot(&finder.limits, request)?;
    let mut context = Context::in_namespace_of(finder, peer, mode, request.mount_namespace);
    context.barrier()?;
    let plan = plan_of(finder, peer, &request.program_key);
    let planned = plan.iter().flat_map(|plan| plan.directories.iter());
    context.crawl_ahead(request.sys_path.iter().chain(planned));
    let mut reply = Answers::new(&context, &header(finder), SNAPSHOT_DIRECTORIES_FIELD);
    let mut served = Vec::new();
    for path in &request.sys_path {
        if let Some(listing) = reply.add(path, Role::SysPathEntry)? {
            served.push(listing);
        }
    }
    match plan {
        // The plan replaces the guess.
        Some(plan) => add_plan(&mut reply, &plan, request.bytecode_bytes)?,
        None => prefetch(&mut reply, &served, request.prefetch_bytes)?,
    }
    Ok(reply.finish())
}

/// The fields of a Snapshot reply that precede its directories.
fn header(finder: &Finder) -> pb::SnapshotReply {
    pb::SnapshotReply {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        generations: Some(finder.generations.clone()),
        ..Default::default()
    }
}

/// A reply of directories being answered: each path once, counted.
pub struct Answers<'c, 'a> {
    context: &'c Context<'a>,
    reply: Reply,
    /// Paths answered so far, and how to answer them again.
    answered: HashMap<Bytes, Again>,
    tally: Tally,
}

impl<'c, 'a> Answers<'c, 'a> {
    pub fn new(context: &'c Context<'a>, header: &impl prost::Message, field: u32) -> Self {
        Self {
            context,
            reply: Reply::new(header, field),
            answered: HashMap::new(),
            tally: Tally::default(),
        }
    }

    /// Answers `path` (a second time: UNCHANGED at the first answer);
    /// returns its listing when it is one.
    pub fn add(&mut self, path: &Bytes, role: Role) -> Result<Option<Arc<Listing>>, Unanswered> {
        self.add_known(path, 0, role)
    }

    /// [`add`](Self::add) for a path the client holds at `known_generation`.
    pub fn add_known(
        &mut self,
        path: &Bytes,
        known_generation: u64,
        role: Role,
    ) -> Result<Option<Arc<Listing>>, Unanswered> {
        if let Some(again) = self.answered.get(path) {
            let again = again.answer();
            self.push(path, &again);
            return Ok(None);
        }
        let answer = self.context.ask(path, known_generation, role)?;
        self.answered.insert(path.clone(), Again::of(&answer));
        self.push(path, &answer);
        Ok(match answer {
            Answer::Listed(listing) => Some(listing),
            _ => None,
        })
    }

    fn push(&mut self, path: &Bytes, answer: &Answer) {
        let encoded = self.context.encode(path, answer);
        if self.fits(&encoded) {
            self.tally.count(answer);
            self.reply.push(&encoded);
            return;
        }
        let over = Answer::NotServed(format!(
            "the reply would pass the limit max_reply_bytes = {}",
            self.max_bytes()
        ));
        self.tally.count(&over);
        self.reply.push(&encode_answer(path, &over));
    }

    fn max_bytes(&self) -> u64 {
        let limits = &self.context.finder.quotas.limits;
        limits.max_reply_bytes.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more fit within `max_reply_bytes`.
    fn fits_bytes(&self, bytes: usize) -> bool {
        (self.reply.len() + bytes) as u64 <= self.max_bytes()
    }

    fn fits(&self, directory: &[u8]) -> bool {
        self.fits_bytes(Reply::framed_len(directory))
    }

    /// Whether `path` was answered in this reply.
    fn seen(&self, path: &Bytes) -> bool {
        self.answered.contains_key(path)
    }

    /// Adds a listing beyond the requested paths (plan, prefetch): only
    /// once, counted as served; false when it does not fit the reply.
    fn add_listing(&mut self, listing: &Listing, encoded: &Bytes) -> bool {
        if !self.fits(encoded) {
            return false;
        }
        self.answered.insert(
            listing.path.clone(),
            Again::Held(listing.generation, listing.slot),
        );
        self.tally.served += 1;
        self.reply.push(encoded);
        true
    }

    pub fn finish(self) -> Bytes {
        let finder = self.context.finder;
        self.tally.apply(&finder.stats);
        let tally = &self.tally;
        let uid = self.context.peer.as_ref().map(|peer| peer.uid);
        finder.quotas.count(uid, |usage| {
            usage.served += tally.served;
            usage.not_served += tally.not_served;
            usage.unchanged += tally.unchanged;
        });
        self.reply.finish()
    }
}

/// How a path already in the reply is answered again.
enum Again {
    /// UNCHANGED at this generation and slot: the client holds it by then.
    Held(u64, u32),
    NotServed(String),
}

impl Again {
    fn of(answer: &Answer) -> Again {
        match answer {
            Answer::Listed(listing) => Again::Held(listing.generation, listing.slot),
            Answer::Absent {
                generation, slot, ..
            }
            | Answer::Unchanged { generation, slot } => Again::Held(*generation, *slot),
            Answer::NotServed(reason) => Again::NotServed(reason.clone()),
        }
    }

    fn answer(&self) -> Answer {
        match self {
            Again::Held(generation, slot) => Answer::Unchanged {
                generation: *generation,
                slot: *slot,
            },
            Again::NotServed(reason) => Answer::NotServed(reason.clone()),
        }
    }
}

/// Per-answer counters, applied once a reply is complete (an inline
/// attempt that gives up counts nothing).
#[derive(Default)]
struct Tally {
    served: u64,
    not_served: u64,
    unchanged: u64,
}

impl Tally {
    fn count(&mut self, answer: &Answer) {
        match answer {
            Answer::Listed(_) => self.served += 1,
            Answer::NotServed(_) => self.not_served += 1,
            Answer::Unchanged { .. } => self.unchanged += 1,
            Answer::Absent { .. } => {}
        }
    }

    fn apply(&self, stats: &Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        stats.directories_served.fetch_add(self.served, Relaxed);
        stats
            .directories_not_served
            .fetch_add(self.not_served, Relaxed);
        stats
            .directories_unchanged
            .fetch_add(self.unchanged, Relaxed);
    }
}

/// Adds package directories of the served sys.path entries, in sys.path
/// order then name order, while their encoded size fits the budget.
fn prefetch(reply: &mut Answers, served: &[Arc<Listing>], budget: u64) -> Result<(), Unanswered> {
    let context = reply.context;
    let mut spent = 0u64;
    let candidates = served.iter().flat_map(|listing| {
        listing
            .entries
            .iter()
            .filter(|e| {
                matches!(context.kind_of(listing, e), Kind::Dir | Kind::SymlinkDir)
                    && is_package_name(&e.name)
            })
            .map(|e| Bytes::from(join(&listing.path, &e.name)))
    });
    for path in candidates {
        if budget == 0 {
            return Ok(());
        }
        if reply.seen(&path) {
            continue;
        }
        let Answer::Listed(listing) = context.ask(&path, 0, Role::Other)? else {
            continue; // absent, refused or not for this peer: simply omitted
        };
        let encoded = context.listing_bytes(&listing);
        spent += Reply::framed_len(&encoded) as u64;
        if spent > budget || !reply.add_listing(&listing, &encoded) {
            return Ok(());
        }
    }
    Ok(())
}

/// The plan of this peer's program, if it has one.
fn plan_of(finder: &Finder, peer: &PeerInfo, key: &Bytes) -> Option<Arc<PlanView>> {
    let peer = peer.as_ref()?;
    let plans = &finder.learning.plans;
    if key.is_empty() || key.len() > plans.config().max_program_key_bytes {
        return None;
    }
    plans.get(&PlanKey {
        uid: peer.uid,
        key: key.clone(),
    })
}

/// Appends the plan's directories, compiled files and
/// `planned_directories`.
fn add_plan(reply: &mut Answers, plan: &PlanView, bytecode_bytes: u64) -> Result<(), Unanswered> {
    let context = reply.context;
    let mut planned = 0u64;
    for path in &plan.directories {
        if non_canonical_reason(path).is_some() || reply.seen(path) {
            continue;
        }
        if let Answer::Listed(listing) = context.ask(path, 0, Role::Other)? {
            if reply.add_listing(&listing, &context.listing_bytes(&listing)) {
                planned += 1;
            }
        }
    }
    let learning = &context.finder.learning;
    let budget = bytecode_bytes.min(learning.plans.config().max_plan_bytecode_bytes);
    let chosen = files::for_snapshot(context, plan, budget)?;
    // A file goes only with its directory's listing (the client checks it
    // is current there), and only while the reply has room for it.
    for file in &chosen {
        let mut listed = reply.seen(&file.parent.path);
        if !listed && reply.add_listing(&file.parent, &context.listing_bytes(&file.parent)) {
            listed = true;
            planned += 1;
        }
        if listed && reply.fits_bytes(file.message.encoded_len() + 8) {
            reply
                .reply
                .push_message(SNAPSHOT_FILES_FIELD, &file.message);
            learning.files.count_served(file.message.data.len());
        }
    }
    if planned > 0 {
        reply.reply.push_varint(SNAPSHOT_PLANNED_FIELD, planned);
    }
    let counters = &learning.plans.counters;
    bump(&counters.planned_snapshots);
    counters
        .planned_directories_served
        .fetch_add(planned, Ordering::Relaxed);
    Ok(())
}
