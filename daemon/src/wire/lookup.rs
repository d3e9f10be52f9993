//! Lookup: listings of further directories (package directories, new
//! sys.path entries) and revalidation of directories the client holds
//! (`known_generations`), one `Directory` per requested path, in order,
//! under the same barrier as a Snapshot. A path asked twice is answered
//! once (see [`Answers`]).

use finderd_proto::v1 as pb;
use finderd_proto::v1::PROTOCOL_VERSION;

use super::check::check_lookup;
use super::context::{Context, Handled, Mode};
use super::reply::LOOKUP_DIRECTORIES_FIELD;
use super::snapshot::Answers;
use super::Finder;
use crate::index::Role;
use crate::policy::PeerInfo;

pub fn lookup(
    finder: &Finder,
    peer: &PeerInfo,
    request: &pb::LookupRequest,
    mode: Mode,
) -> Handled {
    check_lookup(&finder.limits, request)?;
    let mut context = Context::in_namespace_of(finder, peer, mode, request.mount_namespace);
    context.barrier()?;
    let header = pb::LookupReply {
        protocol_version: PROTOCOL_VERSION,
        generations: Some(finder.generations.clone()),
        directories: Vec::new(),
    };
    let mut reply = Answers::new(&context, &header, LOOKUP_DIRECTORIES_FIELD);
    let known = &request.known_generations;
    // Generations of another daemon run (another epoch) mean nothing here.
    let comparable = request.known_epoch == finder.generations.epoch;
    for (at, path) in request.paths.iter().enumerate() {
        let known_generation = known.get(at).copied().filter(|_| comparable).unwrap_or(0);
        reply.add_known(path, known_generation, Role::Other)?;
    }
    Ok(reply.finish())
}
