//! One request's context: who asks (the peer), in which view (the index of
//! the daemon's own view, or of the root the peer passed at connect: see
//! `crate::views`), where the handler runs (inline, on the blocking pool, or at its
//! deadline), which filesystems are slow, and whether the barrier ran. Every
//! path a handler answers goes through [`Context::ask`]: the index says what
//! it holds, and the gate (`crate::policy::gate`) decides what of it this
//! peer may have.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::check::{non_canonical_reason, too_deep};
use super::learning::BEING_INDEXED;
use super::reply::{encode_answer, encode_listing, SLOW_FILESYSTEM_TRUE};
use super::{Error, Finder};
use crate::index::{Index, Indexed, Listing, Role, Screen};
use crate::namespace;
use crate::policy::{gate, Facts, PeerInfo};
use crate::refresh::{Entry, Kind};
use crate::stats::bump;

/// Where a handler runs: on the async worker (only what needs no
/// filesystem access), or on the blocking pool (crawls, stat checks); or,
/// once the request's deadline passed with the blocking attempt still
/// running, on the async worker again answering only what is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inline,
    Blocking,
    Deadline {
        /// When the request arrived (`genfile::monotonic_ns`).
        arrived_ns: u64,
    },
}

/// Why a handler gave no reply.
#[derive(Debug)]
pub enum Unanswered {
    /// The request is wrong: the peer gets this error.
    Rejected(Error),
    /// Answering needs the filesystem (inline only): run the handler again
    /// on the blocking pool.
    NeedsFilesystem,
    /// Answering inline took longer than [`INLINE_BUDGET`]: run the handler
    /// again on the blocking pool, so that one big request does not hold
    /// the async worker every other peer's requests wait for.
    OverInlineBudget,
}

/// How long a handler may run on the async worker. The wire is served by
/// one thread by default (`worker_threads` 0), so this is also how long any
/// peer's request can make everyone else's wait: a warm start's Snapshot
/// takes well under it; a request naming thousands of directories (or one
/// deep chain) goes over it and is answered on the blocking pool, where it
/// only competes for a core.
pub const INLINE_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);

impl From<Error> for Unanswered {
    fn from(error: Error) -> Self {
        Unanswered::Rejected(error)
    }
}

/// What a handler returns.
pub type Handled = Result<Bytes, Unanswered>;

/// The answer about one path, for one peer.
#[derive(Debug)]
pub enum Answer {
    Listed(Arc<Listing>),
    Unchanged {
        generation: u64,
        slot: u32,
    },
    Absent {
        errno: i32,
        generation: u64,
        slot: u32,
    },
    NotServed(String),
}

/// A crawl made for a peer goes only where that peer could go itself.
pub struct PeerScreen<'a>(pub &'a PeerInfo);

impl Screen for PeerScreen<'_> {
    fn may_search(&self, dir: &Facts) -> bool {
        gate::may_search(self.0, dir)
    }

    fn may_list(&self, dir: &Facts) -> bool {
        gate::may_list(self.0, dir)
    }

    fn uid(&self) -> Option<u32> {
        self.0.as_ref().map(|peer| peer.uid)
    }
}

/// One request being answered.
pub struct Context<'a> {
    pub finder: &'a Finder,
    pub peer: &'a PeerInfo,
    pub mode: Mode,
    /// The index of the peer's view.
    index: &'a Index,
    /// Why no path of this request is answered (a peer in another mount
    /// namespace without a view, a view refused).
    refusal: Option<String>,
    /// The barrier ran: the index reflects every change made before the
    /// request. At a deadline with the watcher busy it may not have.
    fresh: bool,
    /// When the handler started (inline: for [`INLINE_BUDGET`]).
    started: std::time::Instant,
}

impl<'a> Context<'a> {
    /// Paths mean what they mean in the peer's view, or its mount namespace
    /// (its client said `claimed`; see `crate::namespace`).
    pub fn in_namespace_of(
        finder: &'a Finder,
        peer: &'a PeerInfo,
        mode: Mode,
        claimed: u64,
    ) -> Self {
        let (index, refusal) = match namespace::index_for(&finder.views, peer, claimed) {
            Ok(index) => (index, None),
            Err(reason) => (&**finder.views.host(), Some(reason)),
        };
        Self {
            finder,
            peer,
            mode,
            index,
            refusal,
            fresh: false,
            started: std::time::Instant::now(),
        }
    }

    /// The index of the peer's view.
    pub fn index(&self) -> &'a Index {
        self.index
    }

    /// Applies every change queued before now (see `Index::barrier`).
    /// Inline, a busy watcher means the blocking pool; at the deadline, it
    /// means every answer is "being indexed", unless this view was drained
    /// since the request arrived.
    pub fn barrier(&mut self) -> Result<(), Unanswered> {
        let finder = self.finder;
        finder.heartbeat.note_request();
        let views = &finder.views;
        let elapsed = match self.mode {
            Mode::Blocking => views.barrier(self.index),
            Mode::Inline => views
                .try_barrier(self.index)
                .ok_or(Unanswered::NeedsFilesystem)?,
            Mode::Deadline { arrived_ns } => match views.try_barrier(self.index) {
                Some(elapsed) => elapsed,
                None => {
                    // A watcher is busy (a crawl taking a watch). If this
                    // view's events were drained since the request arrived
                    // (by its own blocking attempt's barrier, or the reader
                    // thread), its index already reflects every change made
                    // before the request: what it holds may be answered.
                    self.fresh = self.index.drained_since_ns() >= arrived_ns;
                    return Ok(());
                }
            },
        };
        finder.stats.barrier_latency.record(elapsed);
        self.fresh = true;
        Ok(())
    }

    /// The answer for one requested path. `known_generation` (0: none)
    /// turns a current answer into UNCHANGED.
    pub fn ask(
        &self,
        path: &Bytes,
        known_generation: u64,
        role: Role,
    ) -> Result<Answer, Unanswered> {
        if self.mode == Mode::Inline {
            self.within_inline_budget()?;
        }
        if let Some(reason) = non_canonical_reason(path) {
            return Ok(Answer::NotServed(format!(
                "path is not canonical: {reason}"
            )));
        }
        if let Some(reason) = too_deep(path) {
            return Ok(Answer::NotServed(reason));
        }
        if !self.fresh {
            return Ok(self.being_indexed());
        }
        if let Some(reason) = &self.refusal {
            return Ok(Answer::NotServed(reason.clone()));
        }
        let index = self.index;
        let indexed = match self.mode {
            Mode::Inline => index.peek(path, role).ok_or(Unanswered::NeedsFilesystem)?,
            Mode::Blocking => index.answer(path, role, &PeerScreen(self.peer)),
            Mode::Deadline { .. } => match index.peek(path, role) {
                Some(indexed) => indexed,
                None => return Ok(self.being_indexed()),
            },
        };
        if may_have(self.peer, &indexed) {
            // Kept from now on for this peer: charged to it.
            index.claim(path, &indexed, self.peer.as_ref().map(|peer| peer.uid));
        }
        Ok(answer_for(self.peer, indexed, known_generation))
    }

    /// Crawls ahead, several at once, the directories among `paths` this
    /// request will [`ask`](Self::ask) for and the view has not indexed
    /// (`Index::crawl_all`), with this peer's permissions. Only on the
    /// blocking pool, and only for paths `ask` would crawl.
    pub fn crawl_ahead<'p>(&self, paths: impl IntoIterator<Item = &'p Bytes>) {
        if self.mode != Mode::Blocking || !self.fresh || self.refusal.is_some() {
            return;
        }
        let crawlable: Vec<&Bytes> = (paths.into_iter())
            .filter(|path| non_canonical_reason(path).is_none() && too_deep(path).is_none())
            .collect();
        let helpers = crate::index::CRAWL_HELPERS;
        (self.index).crawl_all(&crawlable, &PeerScreen(self.peer), helpers);
    }

    /// Inline, whether the handler may go on on the async worker.
    fn within_inline_budget(&self) -> Result<(), Unanswered> {
        if self.started.elapsed() > INLINE_BUDGET {
            return Err(Unanswered::OverInlineBudget);
        }
        Ok(())
    }

    /// The answer for a directory not indexed by the deadline.
    fn being_indexed(&self) -> Answer {
        bump(&self.finder.learning.being_indexed);
        Answer::NotServed(BEING_INDEXED.to_string())
    }

    /// The encoded `Directory` for one answer.
    pub fn encode(&self, path: &Bytes, answer: &Answer) -> Bytes {
        match answer {
            Answer::Listed(listing) => self.listing_bytes(listing),
            answer => encode_answer(path, answer),
        }
    }

    /// A listing's encoding as this peer may have it: symlink entries it
    /// could not follow itself read as a dangling link does; flagged
    /// `slow_filesystem` on slow filesystems.
    pub fn listing_bytes(&self, listing: &Listing) -> Bytes {
        let peer = self.peer;
        let follows_all = (listing.links.iter()).all(|(_, access)| gate::may_follow(peer, access));
        let encoded = if follows_all {
            listing.encoded(|listing| encode_listing(listing, |_| false))
        } else {
            encode_listing(listing, |name| !self.may_follow(listing, name))
        };
        if !self.is_slow(listing) {
            return encoded;
        }
        let mut flagged = BytesMut::with_capacity(encoded.len() + SLOW_FILESYSTEM_TRUE.len());
        flagged.put_slice(&encoded);
        flagged.put_slice(&SLOW_FILESYSTEM_TRUE);
        flagged.freeze()
    }

    /// Whether this peer may have the target's facts of the symlink entry
    /// `name` of `listing`.
    fn may_follow(&self, listing: &Listing, name: &[u8]) -> bool {
        listing
            .link_access(name)
            .is_some_and(|access| gate::may_follow(self.peer, access))
    }

    /// An entry's kind as this peer sees it.
    pub fn kind_of(&self, listing: &Listing, entry: &Entry) -> Kind {
        if entry.link && !self.may_follow(listing, &entry.name) {
            return Kind::Other;
        }
        entry.kind
    }

    /// Whether a listing lives on a filesystem measured as slow. Asked of
    /// the engines each time, not once per request: a request's own crawls
    /// are what first tells a new view's filesystems (a job's overlay) apart.
    pub fn is_slow(&self, listing: &Listing) -> bool {
        (self.index.engines()).is_slow_device(listing.device, self.finder.learning.slow_stat_ns)
    }
}

/// Whether `peer` may have what the index holds.
fn may_have(peer: &PeerInfo, indexed: &Indexed) -> bool {
    indexed
        .access()
        .is_some_and(|access| gate::may_have(peer, access))
}

/// What `peer` gets of what the index holds.
pub fn answer_for(peer: &PeerInfo, indexed: Indexed, known_generation: u64) -> Answer {
    if !may_have(peer, &indexed) {
        return Answer::NotServed(gate::denied_reason(peer));
    }
    let current = |generation| known_generation != 0 && generation == known_generation;
    match indexed {
        Indexed::Listed(listing) if current(listing.generation) => Answer::Unchanged {
            generation: listing.generation,
            slot: listing.slot,
        },
        Indexed::Absent(absence) if current(absence.generation) => Answer::Unchanged {
            generation: absence.generation,
            slot: absence.slot,
        },
        Indexed::Listed(listing) => Answer::Listed(listing),
        Indexed::Absent(absence) => Answer::Absent {
            errno: absence.errno,
            generation: absence.generation,
            slot: absence.slot,
        },
        Indexed::Refused(refused) => Answer::NotServed(refused.reason.clone()),
        Indexed::Screened => Answer::NotServed(gate::denied_reason(peer)),
    }
}
