//! Symlink entries and what they resolve through.
//!
//! An entry's fingerprint is `stat()` of the name, so a symlink's entry
//! carries its *target's* kind, mode, mtime and size (a `.pyc` reached
//! through a symlinked source is validated against them). The target is
//! resolved with the walker (`crate::walk`), from the listed directory,
//! never by following the link with the daemon's own privileges: the walk
//! records the facts of every directory it searched, and the gate gives the
//! target's fingerprint only to a peer that could follow the link itself.
//!
//! Events in the listed directory only say when the link itself changes;
//! when its target is rewritten, renamed over, or a directory the link
//! resolves through is retargeted, the events happen elsewhere. So for
//! every symlink entry the index records, like it does for requested paths,
//! each `dir/name` the link's resolution looked up (watched for namespace
//! events), and watches the directory holding the final target (or the
//! target directory itself) for every name event, writes included. Any of
//! those events re-stats the entry (and resolves it again: the link may now
//! go elsewhere).
//!
//! The watches are taken before the resolution that answers, and the
//! resolution is repeated once they are in place, so a change made after
//! that point always produces an event.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::policy::{Access, Facts};
use crate::refresh::{join, parent_of, Fingerprint, Kind};
use crate::walk::{self, Refusal, Root, Start, Walked};

/// One symlink entry: the listing it is in and its name.
pub type EntryId = (Bytes, Bytes);

/// What a symlink entry's `stat()` depends on, and what it gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkTarget {
    /// Every `(dir, dir/name)` its resolution looked up (real paths).
    pub lookups: Vec<(Bytes, Vec<u8>)>,
    /// The directory whose name events change the entry: the one holding
    /// the final target file, or the target directory itself. `None` for a
    /// dangling, looping or refused link (its lookups cover its coming into
    /// being).
    pub contents: Option<Bytes>,
    /// The final target, when it is a file: only events for this path (of
    /// the contents directory) matter. `None` for a directory target: every
    /// name event inside it moves its mtime.
    pub file: Option<Vec<u8>>,
    /// The directories the resolution searched (from the listed directory
    /// on): who may follow the link.
    pub access: Access,
    /// What `stat()` of the link gives: the target's kind and fingerprint;
    /// `None` when it fails (dangling, looping, refused).
    pub reached: Option<(Kind, Fingerprint)>,
}

/// Records every lookup of a walk.
#[derive(Default)]
struct Lookups(RefCell<Vec<(Bytes, Vec<u8>)>>);

impl walk::Observer for Lookups {
    fn before_lookup(&self, dir: &[u8], _: &Facts, name: &[u8]) -> Result<(), Refusal> {
        self.0
            .borrow_mut()
            .push((Bytes::copy_from_slice(dir), join(dir, name)));
        Ok(())
    }
}

/// Resolves the symlink `dir/name` (`dir` a real path beneath `root`) as
/// the kernel would.
pub fn resolve(root: &Root, dir: &[u8], name: &[u8]) -> LinkTarget {
    let lookups = Lookups::default();
    let walked = Start::directory(root, dir)
        .map_err(|_| None)
        .and_then(|start| walk::walk(start, name, &lookups).map_err(Some));
    let lookups = lookups.0.into_inner();
    match walked {
        Ok(walked) => reached(lookups, walked),
        Err(stop) => {
            let searched = match stop {
                Some(
                    walk::Stop::Absent { searched, .. }
                    | walk::Stop::Refused { searched, .. }
                    | walk::Stop::Raced { searched },
                ) => searched,
                None => Vec::new(),
            };
            LinkTarget {
                lookups,
                access: Access::searched(searched),
                ..LinkTarget::default()
            }
        }
    }
}

fn reached(lookups: Vec<(Bytes, Vec<u8>)>, walked: Walked) -> LinkTarget {
    let stat = Fingerprint::of(&walked.stat);
    let (kind, contents, file) = if walked.is_dir() {
        (Kind::SymlinkDir, Bytes::from(walked.real), None)
    } else {
        let kind = match walked.stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            _ => Kind::Other,
        };
        let contents = Bytes::copy_from_slice(parent_of(&walked.real));
        (kind, contents, Some(walked.real))
    };
    LinkTarget {
        lookups,
        contents: Some(contents),
        file,
        access: Access::searched(walked.searched),
        reached: Some((kind, stat)),
    }
}

impl LinkTarget {
    /// Directories to watch for namespace events.
    pub fn searched_dirs(&self) -> impl Iterator<Item = &Bytes> {
        self.lookups.iter().map(|(dir, _)| dir)
    }
}

/// Which symlink entries depend on which paths and directories.
#[derive(Default)]
pub struct LinkDependencies {
    /// A looked-up location or a target file, to the entries it affects.
    at: HashMap<Vec<u8>, HashSet<EntryId>>,
    /// A target directory: any name event inside it affects these entries.
    inside: HashMap<Bytes, HashSet<EntryId>>,
    /// Every directory an entry's watches are on, to the entries.
    by_dir: HashMap<Bytes, HashSet<EntryId>>,
    of_entry: HashMap<EntryId, LinkTarget>,
    /// Per listing key, its link names.
    of_key: HashMap<Bytes, HashSet<Bytes>>,
    searched_users: HashMap<Bytes, usize>,
    contents_users: HashMap<Bytes, usize>,
}

/// Watches that may have lost their last symlink entry.
#[derive(Default, Debug)]
pub struct Unused {
    pub searched: Vec<Bytes>,
    pub contents: Vec<Bytes>,
}

impl LinkDependencies {
    /// Records (or replaces) what entry `id` depends on.
    pub fn set(&mut self, id: &EntryId, target: LinkTarget, unused: &mut Unused) {
        self.remove(id, unused);
        let mut dirs: HashSet<&Bytes> = HashSet::new();
        for (dir, location) in &target.lookups {
            self.at
                .entry(location.clone())
                .or_default()
                .insert(id.clone());
            dirs.insert(dir);
        }
        for dir in dirs.iter() {
            *self.searched_users.entry((*dir).clone()).or_default() += 1;
        }
        if let Some(contents) = &target.contents {
            *self.contents_users.entry(contents.clone()).or_default() += 1;
            dirs.insert(contents);
            match &target.file {
                Some(file) => {
                    self.at.entry(file.clone()).or_default().insert(id.clone());
                }
                None => {
                    self.inside
                        .entry(contents.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
        }
        for dir in dirs {
            self.by_dir
                .entry(dir.clone())
                .or_default()
                .insert(id.clone());
        }
        self.of_key
            .entry(id.0.clone())
            .or_default()
            .insert(id.1.clone());
        self.of_entry.insert(id.clone(), target);
        // What `remove` released and this target uses again stays.
        unused.searched.retain(|dir| !self.is_searched(dir));
        unused.contents.retain(|dir| !self.is_contents(dir));
    }

    /// Forgets entry `id`; the directories nobody needs any more go to
    /// `unused`.
    pub fn remove(&mut self, id: &EntryId, unused: &mut Unused) {
        let Some(target) = self.of_entry.remove(id) else {
            return;
        };
        if let Some(names) = self.of_key.get_mut(&id.0) {
            names.remove(&id.1);
            if names.is_empty() {
                self.of_key.remove(&id.0);
            }
        }
        let mut locations: Vec<&Vec<u8>> = target.lookups.iter().map(|(_, l)| l).collect();
        locations.extend(target.file.as_ref());
        for location in locations {
            remove_from(&mut self.at, location, id);
        }
        let mut dirs: HashSet<&Bytes> = target.searched_dirs().collect();
        for dir in &dirs {
            if release(&mut self.searched_users, dir) {
                unused.searched.push((*dir).clone());
            }
        }
        if let Some(contents) = &target.contents {
            if release(&mut self.contents_users, contents) {
                unused.contents.push(contents.clone());
            }
            remove_from(&mut self.inside, contents, id);
            dirs.insert(contents);
        }
        for dir in dirs {
            remove_from(&mut self.by_dir, dir, id);
        }
    }

    /// Forgets every symlink entry of the listing `key`.
    pub fn remove_key(&mut self, key: &Bytes, unused: &mut Unused) {
        let names: Vec<Bytes> = self
            .of_key
            .get(key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        for name in names {
            self.remove(&(key.clone(), name), unused);
        }
    }

    /// Roughly what the symlink entries of the listing `key` keep on the
    /// heap here.
    pub fn bytes_of_key(&self, key: &Bytes) -> u64 {
        const PER_LOOKUP: u64 = 128;
        let names = self.of_key.get(key).into_iter().flatten();
        names
            .filter_map(|name| self.of_entry.get(&(key.clone(), name.clone())))
            .map(|target| {
                let lookups: u64 = (target.lookups.iter())
                    .map(|(dir, location)| 2 * (dir.len() + location.len()) as u64 + PER_LOOKUP)
                    .sum();
                lookups + target.access.heap_bytes() as u64
            })
            .sum()
    }

    /// Whether `id` is recorded as a symlink entry.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.of_entry.contains_key(id)
    }

    /// Entries affected by an event for the real path `path`.
    pub fn affected_by(&self, path: &[u8], out: &mut Vec<EntryId>) {
        if let Some(ids) = self.at.get(path) {
            out.extend(ids.iter().cloned());
        }
        if let Some(ids) = self.inside.get(parent_of(path)) {
            out.extend(ids.iter().cloned());
        }
    }

    /// Entries with a watch on `dir` (whose watch went or whose attributes
    /// changed).
    pub fn affected_by_dir(&self, dir: &[u8], out: &mut Vec<EntryId>) {
        if let Some(ids) = self.by_dir.get(dir) {
            out.extend(ids.iter().cloned());
        }
    }

    pub fn is_searched(&self, dir: &[u8]) -> bool {
        self.searched_users.contains_key(dir)
    }

    pub fn is_contents(&self, dir: &[u8]) -> bool {
        self.contents_users.contains_key(dir)
    }
}

fn remove_from<K, Q>(map: &mut HashMap<K, HashSet<EntryId>>, key: &Q, id: &EntryId)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// Drops one user of `dir`; true when it was the last.
fn release(users: &mut HashMap<Bytes, usize>, dir: &Bytes) -> bool {
    let Some(count) = users.get_mut(dir) else {
        return false;
    };
    *count -= 1;
    if *count == 0 {
        users.remove(dir);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    fn bytes_of(path: &std::path::Path) -> Vec<u8> {
        path.as_os_str().as_bytes().to_vec()
    }

    #[test]
    fn resolution_records_every_lookup_and_the_final_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir_all(root.join("real/pkg")).expect("mkdir");
        std::fs::write(root.join("real/pkg/mod.py"), b"x = 1\n").expect("write");
        symlink("real", root.join("via")).expect("symlink");
        std::fs::create_dir(root.join("listed")).expect("mkdir");
        symlink("../via/pkg/mod.py", root.join("listed/mod.py")).expect("symlink");
        let target = resolve(&Root::Host, &bytes_of(&root.join("listed")), b"mod.py");
        let locations: Vec<Vec<u8>> = target.lookups.iter().map(|(_, l)| l.clone()).collect();
        assert_eq!(
            locations,
            vec![
                bytes_of(&root.join("listed/mod.py")),
                bytes_of(&root.join("via")),
                bytes_of(&root.join("real")),
                bytes_of(&root.join("real/pkg")),
                bytes_of(&root.join("real/pkg/mod.py")),
            ]
        );
        assert_eq!(target.file, Some(bytes_of(&root.join("real/pkg/mod.py"))));
        let (kind, stat) = target.reached.expect("reached");
        assert_eq!((kind, stat.size), (Kind::File, 6));
        assert!(target.access.searched.len() >= 4, "listed, root, real, pkg");
        assert_eq!(
            target.contents.as_deref(),
            Some(bytes_of(&root.join("real/pkg")).as_slice())
        );

        symlink(root.join("real/pkg"), root.join("listed/pkg")).expect("symlink");
        let dir_target = resolve(&Root::Host, &bytes_of(&root.join("listed")), b"pkg");
        assert_eq!(dir_target.file, None);
        assert_eq!(
            dir_target.contents.as_deref(),
            Some(bytes_of(&root.join("real/pkg")).as_slice())
        );

        symlink("nowhere/x", root.join("listed/dangling")).expect("symlink");
        let dangling = resolve(&Root::Host, &bytes_of(&root.join("listed")), b"dangling");
        assert_eq!(dangling.contents, None);
        assert_eq!(dangling.reached, None);
        assert_eq!(
            dangling.lookups.last().map(|(_, l)| l.clone()),
            Some(bytes_of(&root.join("listed/nowhere")))
        );

        symlink("loop", root.join("listed/loop")).expect("symlink");
        assert_eq!(
            resolve(&Root::Host, &bytes_of(&root.join("listed")), b"loop").contents,
            None
        );
    }

    #[test]
    fn dependencies_are_counted_and_released() {
        let mut deps = LinkDependencies::default();
        let a: EntryId = (Bytes::from_static(b"/l"), Bytes::from_static(b"a"));
        let b: EntryId = (Bytes::from_static(b"/l"), Bytes::from_static(b"b"));
        let to_file = LinkTarget {
            lookups: vec![(Bytes::from_static(b"/t"), b"/t/f".to_vec())],
            contents: Some(Bytes::from_static(b"/t")),
            file: Some(b"/t/f".to_vec()),
            ..LinkTarget::default()
        };
        let to_dir = LinkTarget {
            lookups: vec![(Bytes::from_static(b"/t"), b"/t/d".to_vec())],
            contents: Some(Bytes::from_static(b"/t/d")),
            file: None,
            ..LinkTarget::default()
        };
        let mut unused = Unused::default();
        deps.set(&a, to_file.clone(), &mut unused);
        deps.set(&b, to_dir, &mut unused);
        let mut hit = Vec::new();
        deps.affected_by(b"/t/f", &mut hit);
        assert_eq!(hit, vec![a.clone()]);
        hit.clear();
        deps.affected_by(b"/t/d/anything", &mut hit);
        assert_eq!(hit, vec![b.clone()]);
        hit.clear();
        deps.affected_by(b"/t/other", &mut hit);
        assert!(hit.is_empty());
        // Re-setting replaces, without leaking a user.
        deps.set(&a, to_file, &mut unused);
        assert!(unused.searched.is_empty() && unused.contents.is_empty());
        deps.remove_key(&Bytes::from_static(b"/l"), &mut unused);
        unused.contents.sort();
        assert_eq!(unused.searched, vec![Bytes::from_static(b"/t")]);
        assert_eq!(
            unused.contents,
            vec![Bytes::from_static(b"/t"), Bytes::from_static(b"/t/d")]
        );
        assert!(!deps.is_searched(b"/t") && !deps.is_contents(b"/t"));
        assert!(!deps.contains(&a));
    }
}
