//! The data directory's identity: the `NODE` file, naming the cluster and the node the
//! directory belongs to. Written once, at the first start, and checked at every start after:
//! a directory started under another node id, or handed to another cluster, is refused before
//! the engine opens, because its Raft state (votes, acknowledged entries) was promised by
//! that node in that cluster and must not be reused by another.
//!
//! Encoding (docs/format.md, "NODE"):
//!
//! ```text
//! format=3
//! cluster=<uuid, hyphenated lower case>
//! node=<decimal node id>
//! admitted=<0 or 1>
//! rebuilding=<0 or 1>            (format 2; a format 1 file has no such line and means 0)
//! joined=<0 or 1>                (format 3; older files have no such line and mean 0)
//! crc32c=<8 hex digits over the bytes of the lines above>
//! ```
//!
//! `admitted=0`: the file was created but the node has not yet been admitted to its cluster
//! (see [`crate::node::bootstrap`]); it must not vote or acknowledge, and the next start
//! asks again. The node sets `admitted=1` (temp file + fsync + rename + directory fsync)
//! once it bootstraps or joins. `rebuilding=1`: the directory was wiped and the node is being
//! rebuilt under its old id (docs/replication.md): until it clears the flag, none of its
//! groups votes or acknowledges beyond what is already committed, also after a crash.
//! `joined=1`: the node was admitted by joining a running cluster as a learner (admission's
//! `Join`, `tern cluster add-node`): no group of it ever takes its configuration from
//! `--peers` or from a partition's initial replicas; every configuration comes from a leader.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_engine::engine::META_FILE;
use uuid::Uuid;

pub const NODE_FILE: &str = "NODE";
/// Version of the `NODE` file's encoding this build writes. 2 added `rebuilding`, 3 `joined`.
pub const IDENTITY_FORMAT_VERSION: u16 = 3;
/// The oldest encoding this build still reads (no `rebuilding` line: not rebuilding).
const IDENTITY_FORMAT_VERSION_MIN: u16 = 1;
/// A `NODE` file is a few dozen bytes; anything longer is not ours (read bound).
const NODE_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_id: Uuid,
    pub node_id: u64,
    /// Admitted to the cluster: it may vote and acknowledge (unless `rebuilding`).
    pub admitted: bool,
    /// Lost its data and is being rebuilt: it must not vote, campaign, or acknowledge beyond
    /// its leader's commit index until every group is rebuilt (docs/replication.md).
    pub rebuilding: bool,
    /// Admitted by joining a running cluster (not by bootstrapping it): its groups learn
    /// their configuration from their leaders only.
    pub joined: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged or not a tern NODE file ({why}); it names the node this data directory belongs to: restore it from a backup, or wipe the directory and rebuild the replica (docs/operations/node.md)")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: NODE format version {found} (this build reads {IDENTITY_FORMAT_VERSION_MIN} to {IDENTITY_FORMAT_VERSION})")]
    UnsupportedVersion { path: PathBuf, found: u16 },
    #[error("data directory {dir} belongs to node {stored}, not node {requested}: start it with --node-id {stored}, or give node {requested} its own data directory")]
    NodeIdMismatch {
        dir: PathBuf,
        stored: u64,
        requested: u64,
    },
    #[error("data directory {dir} belongs to cluster {stored}, not cluster {requested}: a node cannot move between clusters; give it a new data directory to join {requested}")]
    ClusterIdMismatch {
        dir: PathBuf,
        stored: Uuid,
        requested: Uuid,
    },
    #[error("data directory {dir} is new and peers lists other voters: pass --cluster-id UUID (the same on every node of the cluster; e.g. from `uuidgen`) so the nodes recognise each other")]
    ClusterIdRequired { dir: PathBuf },
    #[error("data directory {dir} holds data but no NODE file, and peers lists other voters: it cannot be told which node it belongs to; wipe it and rebuild the replica (docs/operations/node.md)")]
    DataWithoutIdentity { dir: PathBuf },
}

impl IdentityError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the identity was obtained at this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOrigin {
    /// The `NODE` file was there and matched the configuration.
    Existing,
    /// The data directory was empty (or new): this start created it, not yet admitted.
    /// See [`crate::node::bootstrap`] for what such a node may do.
    Created,
    /// The directory had engine data from before identities existed (a standalone node or
    /// an offline `tern generate`): it was adopted under this identity.
    Adopted,
}

/// What this start asks of the directory.
#[derive(Debug, Clone, Copy)]
pub struct IdentityRequest {
    pub node_id: u64,
    /// `--cluster-id`, if given.
    pub cluster_id: Option<Uuid>,
    /// The controller has voters besides this node (`peers` lists others).
    pub multi_node: bool,
}

impl NodeIdentity {
    /// The cluster id as the peer handshake's 64-bit field carries it (`tern_net::Hello`'s
    /// `cluster_id: u64`): the XOR of the UUID's two halves. A fingerprint, not the id: two
    /// clusters collide with probability 2^-64, which is acceptable for refusing a peer of
    /// another cluster by mistake but is why the handshake should carry all 16 bytes.
    pub fn wire_cluster_id(&self) -> u64 {
        wire_cluster_id(self.cluster_id)
    }

    pub fn encode(&self) -> String {
        let body = format!(
            "format={IDENTITY_FORMAT_VERSION}\ncluster={}\nnode={}\nadmitted={}\nrebuilding={}\njoined={}\n",
            self.cluster_id.hyphenated(),
            self.node_id,
            self.admitted as u8,
            self.rebuilding as u8,
            self.joined as u8
        );
        format!("{body}crc32c={:08x}\n", crc32c::crc32c(body.as_bytes()))
    }

    /// Checks the checksum before trusting any line; every field must be present once.
    pub fn decode(path: &Path, text: &str) -> Result<NodeIdentity, IdentityError> {
        let corrupt = |why: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let split = text
            .rfind("crc32c=")
            .ok_or_else(|| corrupt("no crc32c line".into()))?;
        let (body, crc_line) = text.split_at(split);
        let actual = crc32c::crc32c(body.as_bytes());
        // Exactly the line the encoder writes: a truncated or altered line is damage.
        if crc_line != format!("crc32c={actual:08x}\n") {
            return Err(corrupt(format!(
                "checksum line {:?} does not match the contents (crc32c {actual:08x})",
                crc_line.trim_end()
            )));
        }
        let (mut format, mut cluster, mut node, mut admitted) = (None, None, None, None);
        let (mut rebuilding, mut joined) = (None, None);
        let flag = |key: &str, value: &str| match value {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(corrupt(format!("{key} {value:?}"))),
        };
        for line in body.lines() {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| corrupt(format!("unexpected line {line:?}")))?;
            let slot_taken = match key {
                "format" => format
                    .replace(
                        value
                            .parse::<u16>()
                            .map_err(|e| corrupt(format!("format {value:?}: {e}")))?,
                    )
                    .is_some(),
                "cluster" => cluster
                    .replace(
                        Uuid::parse_str(value)
                            .map_err(|e| corrupt(format!("cluster {value:?}: {e}")))?,
                    )
                    .is_some(),
                "node" => node
                    .replace(
                        value
                            .parse::<u64>()
                            .map_err(|e| corrupt(format!("node {value:?}: {e}")))?,
                    )
                    .is_some(),
                "admitted" => admitted.replace(flag(key, value)?).is_some(),
                "rebuilding" => rebuilding.replace(flag(key, value)?).is_some(),
                "joined" => joined.replace(flag(key, value)?).is_some(),
                _ => return Err(corrupt(format!("unexpected key {key:?}"))),
            };
            if slot_taken {
                return Err(corrupt(format!("{key} given twice")));
            }
        }
        let format = format.ok_or_else(|| corrupt("missing format".into()))?;
        if !(IDENTITY_FORMAT_VERSION_MIN..=IDENTITY_FORMAT_VERSION).contains(&format) {
            return Err(IdentityError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: format,
            });
        }
        let rebuilding = match (format, rebuilding) {
            (1, None) => false,
            (1, Some(_)) => return Err(corrupt("rebuilding in a format 1 file".into())),
            (_, Some(r)) => r,
            (_, None) => return Err(corrupt("missing rebuilding".into())),
        };
        let joined = match (format, joined) {
            (1 | 2, None) => false,
            (1 | 2, Some(_)) => return Err(corrupt(format!("joined in a format {format} file"))),
            (_, Some(j)) => j,
            (_, None) => return Err(corrupt("missing joined".into())),
        };
        let identity = NodeIdentity {
            cluster_id: cluster.ok_or_else(|| corrupt("missing cluster".into()))?,
            node_id: node.ok_or_else(|| corrupt("missing node".into()))?,
            admitted: admitted.ok_or_else(|| corrupt("missing admitted".into()))?,
            rebuilding,
            joined,
        };
        if identity.rebuilding && !identity.admitted {
            return Err(corrupt("rebuilding but not admitted".into()));
        }
        if identity.joined && !identity.admitted {
            return Err(corrupt("joined but not admitted".into()));
        }
        if identity.node_id == 0 || identity.cluster_id.is_nil() {
            return Err(corrupt("node 0 or nil cluster id".into()));
        }
        Ok(identity)
    }
}

/// Reads the directory's `NODE` file; `None` when there is none.
pub fn read_identity(dir: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
    let path = dir.join(NODE_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IdentityError::io(&path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| IdentityError::io(&path, e))?
        .len();
    if len > NODE_FILE_BYTES_MAX {
        return Err(IdentityError::Corrupt {
            path,
            why: format!("{len} bytes, more than {NODE_FILE_BYTES_MAX}"),
        });
    }
    let bytes = std::fs::read(&path).map_err(|e| IdentityError::io(&path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| IdentityError::Corrupt {
        path: path.clone(),
        why: "not UTF-8 text".into(),
    })?;
    NodeIdentity::decode(&path, &text).map(Some)
}

/// Checks the directory's identity against the request, or creates it when the directory
/// has none. Creates `dir` (and fsyncs its parent) if missing.
///
/// Runs before the engine takes the directory's lock, so creation must be safe against a
/// second process doing the same: the file is written to a temp name, fsynced, and linked to
/// `NODE` with `link(2)`, which fails rather than replaces when `NODE` exists; then the
/// directory is fsynced. Whoever loses the race reads the winner's file and is checked
/// against it like any later start.
/// The peer protocol's 64-bit cluster id (its Hello carries a u64): the UUID's halves XORed.
pub fn wire_cluster_id(cluster_id: Uuid) -> u64 {
    let (hi, lo) = cluster_id.as_u64_pair();
    hi ^ lo
}

pub fn open_or_create(
    dir: &Path,
    req: IdentityRequest,
) -> Result<(NodeIdentity, IdentityOrigin), IdentityError> {
    create_dir_durably(dir)?;
    if let Some(found) = read_identity(dir)? {
        check(dir, found, req)?;
        return Ok((found, IdentityOrigin::Existing));
    }
    let has_engine_data = dir.join(META_FILE).exists();
    if has_engine_data && req.multi_node {
        return Err(IdentityError::DataWithoutIdentity {
            dir: dir.to_path_buf(),
        });
    }
    let cluster_id = match req.cluster_id {
        Some(id) => id,
        None if req.multi_node => {
            return Err(IdentityError::ClusterIdRequired {
                dir: dir.to_path_buf(),
            })
        }
        None => Uuid::new_v4(),
    };
    let identity = NodeIdentity {
        cluster_id,
        node_id: req.node_id,
        admitted: false,
        rebuilding: false,
        joined: false,
    };
    if !write_new(dir, &identity)? {
        // Another process created it first: check against what it wrote.
        let found = read_identity(dir)?.ok_or_else(|| IdentityError::Corrupt {
            path: dir.join(NODE_FILE),
            why: "vanished right after being created".into(),
        })?;
        check(dir, found, req)?;
        return Ok((found, IdentityOrigin::Existing));
    }
    let origin = if has_engine_data {
        IdentityOrigin::Adopted
    } else {
        IdentityOrigin::Created
    };
    Ok((identity, origin))
}

fn check(dir: &Path, found: NodeIdentity, req: IdentityRequest) -> Result<(), IdentityError> {
    if found.node_id != req.node_id {
        return Err(IdentityError::NodeIdMismatch {
            dir: dir.to_path_buf(),
            stored: found.node_id,
            requested: req.node_id,
        });
    }
    if let Some(requested) = req.cluster_id {
        if requested != found.cluster_id {
            return Err(IdentityError::ClusterIdMismatch {
                dir: dir.to_path_buf(),
                stored: found.cluster_id,
                requested,
            });
        }
    }
    Ok(())
}

/// Records that the node was admitted to its cluster (bootstrapped it or joined it).
pub fn mark_admitted(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite(
        dir,
        NodeIdentity {
            admitted: true,
            ..identity
        },
    )
}

/// Records that the node joined a running cluster as a learner (admission's `Join`): admitted,
/// and its groups take their configuration from their leaders only, also after a restart.
pub fn mark_joined(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite(
        dir,
        NodeIdentity {
            admitted: true,
            joined: true,
            ..identity
        },
    )
}

/// Records that this wiped node is admitted to be rebuilt under its old id (`tern serve
/// --rebuild`): it counts as admitted, but every group starts non-voting, also after a crash,
/// until [`mark_rebuilt`]. Written before any Raft group is created.
pub fn mark_rebuilding(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite(
        dir,
        NodeIdentity {
            admitted: true,
            rebuilding: true,
            ..identity
        },
    )
}

/// Records that this node was made the only voter of its cluster (`tern serve
/// --force-new-cluster`): it is no longer a joined learner, so topics created from now on
/// bootstrap their initial replicas on it. Written before any group is rewritten.
pub fn mark_forced(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite(
        dir,
        NodeIdentity {
            joined: false,
            ..identity
        },
    )
}

/// Records that every group of this node is rebuilt; durable before any group votes again.
pub fn mark_rebuilt(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite(
        dir,
        NodeIdentity {
            rebuilding: false,
            ..identity
        },
    )
}

/// Replaces `NODE` atomically: temp file, fsync, rename, directory fsync.
fn rewrite(dir: &Path, identity: NodeIdentity) -> Result<NodeIdentity, IdentityError> {
    rewrite_with(&StdIdentityFs, dir, identity)
}

fn rewrite_with(
    fs: &impl IdentityFs,
    dir: &Path,
    identity: NodeIdentity,
) -> Result<NodeIdentity, IdentityError> {
    let path = dir.join(NODE_FILE);
    let tmp = dir.join(format!("{NODE_FILE}.tmp.{}", std::process::id()));
    fs.write_synced(&tmp, identity.encode().as_bytes())?;
    fs.rename(&tmp, &path)?;
    fs.sync_dir(dir)?;
    Ok(identity)
}

/// The file-system steps that make `NODE` durable, behind a seam so a test can check them on
/// a model that forgets what a power loss would (`durability_tests` below); production has
/// one implementation, [`StdIdentityFs`].
trait IdentityFs {
    /// Creates `path` with `bytes` and fsyncs it.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<(), IdentityError>;
    /// `link(2)`: false when `to` exists already (nothing changed).
    fn link(&self, from: &Path, to: &Path) -> Result<bool, IdentityError>;
    fn rename(&self, from: &Path, to: &Path) -> Result<(), IdentityError>;
    fn remove(&self, path: &Path) -> Result<(), IdentityError>;
    fn sync_dir(&self, dir: &Path) -> Result<(), IdentityError>;
}

struct StdIdentityFs;

impl IdentityFs for StdIdentityFs {
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
        let mut f = File::create(path).map_err(|e| IdentityError::io(path, e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| IdentityError::io(path, e))
    }

    fn link(&self, from: &Path, to: &Path) -> Result<bool, IdentityError> {
        match std::fs::hard_link(from, to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IdentityError::io(to, e)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), IdentityError> {
        std::fs::rename(from, to).map_err(|e| IdentityError::io(to, e))
    }

    fn remove(&self, path: &Path) -> Result<(), IdentityError> {
        std::fs::remove_file(path).map_err(|e| IdentityError::io(path, e))
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), IdentityError> {
        sync_dir(dir)
    }
}

/// The engine's one directory fsync for `std::fs` callers, its error named as ours.
fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    tern_engine::engine::sync_dir_std(dir).map_err(|e| match e {
        tern_engine::Error::Io { path, source } => IdentityError::Io { path, source },
        other => IdentityError::io(dir, std::io::Error::other(other.to_string())),
    })
}

fn create_dir_durably(dir: &Path) -> Result<(), IdentityError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| IdentityError::io(dir, e))?;
    // The new directory entry lives in the parent: make it durable before anything inside.
    let abs = std::path::absolute(dir).map_err(|e| IdentityError::io(dir, e))?;
    if let Some(parent) = abs.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Returns false when `NODE` already existed (nothing written).
fn write_new(dir: &Path, identity: &NodeIdentity) -> Result<bool, IdentityError> {
    write_new_with(&StdIdentityFs, dir, identity)
}

fn write_new_with(
    fs: &impl IdentityFs,
    dir: &Path,
    identity: &NodeIdentity,
) -> Result<bool, IdentityError> {
    let path = dir.join(NODE_FILE);
    // A per-process temp name: two racing starts must not write into one temp file.
    let tmp = dir.join(format!("{NODE_FILE}.tmp.{}", std::process::id()));
    fs.write_synced(&tmp, identity.encode().as_bytes())?;
    let linked = match fs.link(&tmp, &path) {
        Ok(linked) => linked,
        Err(e) => {
            let _ = fs.remove(&tmp);
            return Err(e);
        }
    };
    fs.remove(&tmp)?;
    fs.sync_dir(dir)?;
    Ok(linked)
}

#[cfg(test)]
mod durability_tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    /// A directory as a power loss leaves it: contents are durable once written and synced,
    /// names only once their directory was fsynced after the change.
    #[derive(Default)]
    struct CrashModel {
        live: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
        durable: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
    }

    impl IdentityFs for CrashModel {
        fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
            self.live
                .borrow_mut()
                .insert(path.to_path_buf(), bytes.to_vec());
            Ok(())
        }

        fn link(&self, from: &Path, to: &Path) -> Result<bool, IdentityError> {
            let mut live = self.live.borrow_mut();
            if live.contains_key(to) {
                return Ok(false);
            }
            let bytes = live.get(from).cloned().unwrap_or_default();
            live.insert(to.to_path_buf(), bytes);
            Ok(true)
        }

        fn rename(&self, from: &Path, to: &Path) -> Result<(), IdentityError> {
            let mut live = self.live.borrow_mut();
            let bytes = live.remove(from).unwrap_or_default();
            live.insert(to.to_path_buf(), bytes);
            Ok(())
        }

        fn remove(&self, path: &Path) -> Result<(), IdentityError> {
            self.live.borrow_mut().remove(path);
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> Result<(), IdentityError> {
            let live = self.live.borrow();
            let mut durable = self.durable.borrow_mut();
            durable.retain(|p, _| p.parent() != Some(dir));
            for (p, b) in live.iter().filter(|(p, _)| p.parent() == Some(dir)) {
                durable.insert(p.clone(), b.clone());
            }
            Ok(())
        }
    }

    fn identity(admitted: bool) -> NodeIdentity {
        NodeIdentity {
            cluster_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            node_id: 2,
            admitted,
            rebuilding: false,
            joined: false,
        }
    }

    /// Ra PR #589, "sync parent directory after creating config file", for `NODE`: a power
    /// loss right after it was created, or rewritten (`admitted=1`), keeps what was written.
    /// Fails if `write_new` or `rewrite` skips the directory fsync.
    #[test]
    fn node_file_survives_a_power_loss_right_after_its_creation_and_its_rewrite() {
        let fs = CrashModel::default();
        let dir = Path::new("/data");
        let path = dir.join(NODE_FILE);
        assert!(write_new_with(&fs, dir, &identity(false)).expect("create"));
        let durable = |fs: &CrashModel| {
            let bytes = fs
                .durable
                .borrow()
                .get(&path)
                .cloned()
                .expect("NODE survives");
            let text = String::from_utf8(bytes).expect("text");
            NodeIdentity::decode(&path, &text).expect("decodes")
        };
        assert_eq!(durable(&fs), identity(false));
        rewrite_with(&fs, dir, identity(true)).expect("rewrite");
        assert_eq!(durable(&fs), identity(true));
        assert_eq!(fs.durable.borrow().len(), 1, "no temp name left behind");
    }

    /// Forwards the first `left` steps to the model, then fails every step: a power cut
    /// after exactly that many file-system steps (what follows never happens).
    struct CutAfter<'a> {
        model: &'a CrashModel,
        left: std::cell::Cell<usize>,
    }

    impl CutAfter<'_> {
        fn step(&self, path: &Path) -> Result<(), IdentityError> {
            match self.left.get() {
                0 => Err(IdentityError::io(path, std::io::Error::other("power cut"))),
                n => {
                    self.left.set(n - 1);
                    Ok(())
                }
            }
        }
    }

    impl IdentityFs for CutAfter<'_> {
        fn write_synced(&self, path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
            self.step(path)?;
            self.model.write_synced(path, bytes)
        }
        fn link(&self, from: &Path, to: &Path) -> Result<bool, IdentityError> {
            self.step(to)?;
            self.model.link(from, to)
        }
        fn rename(&self, from: &Path, to: &Path) -> Result<(), IdentityError> {
            self.step(to)?;
            self.model.rename(from, to)
        }
        fn remove(&self, path: &Path) -> Result<(), IdentityError> {
            self.step(path)?;
            self.model.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> Result<(), IdentityError> {
            self.step(dir)?;
            self.model.sync_dir(dir)
        }
    }

    /// Ra PR #589, "a new member registered only after its log is initialised": the
    /// controller lists a new cluster's node as a voter (from `--peers`) before its
    /// directory exists, so what the node may do after a crash during its first start must
    /// follow from what reached its disk. A power cut after every file-system step of that
    /// start (`NODE` created with admitted=0, then rewritten admitted=1) leaves no `NODE`,
    /// the first one or the second, whole, in that order; and the restart's admission
    /// (`bootstrap::decide_start`) resumes as a voter only from a durable admitted=1. Without
    /// it the node bootstraps if the cluster does not exist yet, and is otherwise refused
    /// (it cannot prove it made no promises) unless started with `--rebuild`: it never votes
    /// or acknowledges as a member on the strength of an admission that did not reach the
    /// disk. (The engine's WAL is opened only after this, and its own crash points are
    /// `engine/tests/crash_points.rs`; tests/new_member_crash.rs runs the real processes.)
    #[test]
    fn a_power_cut_at_every_step_of_a_first_start_never_resumes_an_unadmitted_node() {
        use crate::node::bootstrap::{decide_start, Admission, AdmissionError, PeerView};
        let dir = Path::new("/data");
        let path = dir.join(NODE_FILE);
        let me = identity(false);
        let voters = [1, 2, 3];
        let bootstrapped = [PeerView {
            node_id: 1,
            cluster_id: me.cluster_id,
            bootstrapped: true,
            voters: voters.to_vec(),
        }];
        let fresh: Vec<PeerView> = [1, 3]
            .into_iter()
            .map(|node_id| PeerView {
                node_id,
                cluster_id: me.cluster_id,
                bootstrapped: false,
                voters: Vec::new(),
            })
            .collect();
        let mut seen = Vec::new();
        for steps in 0.. {
            let model = CrashModel::default();
            let cut = CutAfter {
                model: &model,
                left: std::cell::Cell::new(steps),
            };
            let finished = write_new_with(&cut, dir, &me)
                .and_then(|_| rewrite_with(&cut, dir, identity(true)))
                .is_ok();
            let durable = model.durable.borrow().clone();
            assert!(
                durable.keys().all(|p| p == &path),
                "after {steps} steps a temp name is durable: {durable:?}"
            );
            let on_disk = durable.get(&path).map(|bytes| {
                let text = String::from_utf8(bytes.clone()).expect("text");
                NodeIdentity::decode(&path, &text).expect("a whole NODE file, never torn")
            });
            let stage = match on_disk {
                None => 0,
                Some(id) if id == me => 1,
                Some(id) => {
                    assert_eq!(id, identity(true), "after {steps} steps");
                    2
                }
            };
            let admitted = stage == 2;
            let restart = |rebuild, answers: &[PeerView]| {
                decide_start(
                    rebuild,
                    admitted,
                    me.node_id,
                    me.cluster_id,
                    &voters,
                    answers,
                )
            };
            if admitted {
                assert_eq!(restart(false, &bootstrapped), Ok(Admission::Resume));
            } else {
                assert!(
                    matches!(
                        restart(false, &bootstrapped),
                        Err(AdmissionError::WipedVoter { .. })
                    ),
                    "after {steps} steps, not admitted on disk"
                );
                assert_eq!(restart(true, &bootstrapped), Ok(Admission::Rebuild));
                assert_eq!(restart(false, &fresh), Ok(Admission::Bootstrap));
            }
            seen.push(stage);
            if finished {
                break;
            }
        }
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "durable states went back: {seen:?}"
        );
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&2));
        assert!(seen.contains(&1), "{seen:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(node_id: u64, cluster_id: Option<Uuid>, multi_node: bool) -> IdentityRequest {
        IdentityRequest {
            node_id,
            cluster_id,
            multi_node,
        }
    }

    #[test]
    fn created_once_then_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (id, origin) = open_or_create(&dir, req(3, None, false)).unwrap();
        assert_eq!(origin, IdentityOrigin::Created);
        assert_eq!(id.node_id, 3);
        assert!(!id.cluster_id.is_nil());
        let (again, origin) = open_or_create(&dir, req(3, Some(id.cluster_id), false)).unwrap();
        assert_eq!((again, origin), (id, IdentityOrigin::Existing));
        assert!(!again.admitted);
        let admitted = mark_admitted(&dir, again).unwrap();
        assert_eq!(read_identity(&dir).unwrap(), Some(admitted));
        assert!(admitted.admitted);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(NODE_FILE)]);
    }

    #[test]
    fn another_node_id_is_refused_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        open_or_create(tmp.path(), req(1, None, false)).unwrap();
        let err = open_or_create(tmp.path(), req(2, None, false)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            IdentityError::NodeIdMismatch {
                stored: 1,
                requested: 2,
                ..
            }
        ));
        assert!(text.contains("node 1") && text.contains("node 2"), "{text}");
    }

    #[test]
    fn another_cluster_is_refused_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        open_or_create(tmp.path(), req(1, Some(a), true)).unwrap();
        let err = open_or_create(tmp.path(), req(1, Some(b), true)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );
    }

    #[test]
    fn multi_node_needs_a_cluster_id_and_refuses_data_without_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let err = open_or_create(tmp.path(), req(1, None, true)).unwrap_err();
        assert!(matches!(err, IdentityError::ClusterIdRequired { .. }));
        std::fs::write(tmp.path().join(META_FILE), "x").unwrap();
        let err = open_or_create(tmp.path(), req(1, Some(Uuid::new_v4()), true)).unwrap_err();
        assert!(matches!(err, IdentityError::DataWithoutIdentity { .. }));
        let (_, origin) = open_or_create(tmp.path(), req(1, None, false)).unwrap();
        assert_eq!(origin, IdentityOrigin::Adopted);
    }

    #[test]
    fn encode_decode_round_trip_and_every_damage_is_refused() {
        let id = NodeIdentity {
            cluster_id: Uuid::new_v4(),
            node_id: 42,
            admitted: true,
            rebuilding: true,
            joined: true,
        };
        let text = id.encode();
        let p = Path::new("NODE");
        assert_eq!(NodeIdentity::decode(p, &text).unwrap(), id);
        // Every single-byte change and every truncation is refused, never misread.
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(s) = String::from_utf8(bytes) {
                assert!(NodeIdentity::decode(p, &s).is_err(), "flip at {i}");
            }
            assert!(NodeIdentity::decode(p, &text[..i]).is_err(), "cut at {i}");
        }
        let future = {
            let body = format!("format=9\ncluster={}\nnode=1\nadmitted=1\n", Uuid::new_v4());
            format!("{body}crc32c={:08x}\n", crc32c::crc32c(body.as_bytes()))
        };
        assert!(matches!(
            NodeIdentity::decode(p, &future),
            Err(IdentityError::UnsupportedVersion { found: 9, .. })
        ));
    }

    /// A crash mid-rebuild must restart rebuilding: the flag is on disk before any group
    /// exists, and only `mark_rebuilt` clears it.
    #[test]
    fn rebuilding_flag_survives_a_reread_until_marked_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, _) = open_or_create(tmp.path(), req(2, Some(Uuid::new_v4()), true)).unwrap();
        let rebuilding = mark_rebuilding(tmp.path(), id).unwrap();
        let (reread, origin) =
            open_or_create(tmp.path(), req(2, Some(id.cluster_id), true)).unwrap();
        assert_eq!(origin, IdentityOrigin::Existing);
        assert_eq!(reread, rebuilding);
        assert!(reread.admitted && reread.rebuilding);
        let rebuilt = mark_rebuilt(tmp.path(), reread).unwrap();
        assert_eq!(read_identity(tmp.path()).unwrap(), Some(rebuilt));
        assert!(rebuilt.admitted && !rebuilt.rebuilding);
    }

    /// Directories written before `rebuilding` existed still read, as not rebuilding; a
    /// format 1 file that names the flag, or a format 2 file without it, is damage.
    #[test]
    fn format_1_files_read_as_not_rebuilding() {
        let p = Path::new("NODE");
        let with_crc =
            |body: String| format!("{body}crc32c={:08x}\n", crc32c::crc32c(body.as_bytes()));
        let cluster = Uuid::new_v4();
        let v1 = with_crc(format!("format=1\ncluster={cluster}\nnode=3\nadmitted=1\n"));
        let id = NodeIdentity::decode(p, &v1).unwrap();
        assert_eq!((id.node_id, id.admitted, id.rebuilding), (3, true, false));
        let v1_flag = with_crc(format!(
            "format=1\ncluster={cluster}\nnode=3\nadmitted=1\nrebuilding=0\n"
        ));
        assert!(NodeIdentity::decode(p, &v1_flag).is_err());
        let v2_none = with_crc(format!("format=2\ncluster={cluster}\nnode=3\nadmitted=1\n"));
        assert!(NodeIdentity::decode(p, &v2_none).is_err());
        let not_admitted = with_crc(format!(
            "format=2\ncluster={cluster}\nnode=3\nadmitted=0\nrebuilding=1\n"
        ));
        assert!(NodeIdentity::decode(p, &not_admitted).is_err());
    }

    /// A forced node (`--force-new-cluster`) that had joined as a learner is no longer one,
    /// durably; it stays admitted.
    #[test]
    fn forcing_a_joined_node_clears_joined() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, _) = open_or_create(tmp.path(), req(4, Some(Uuid::new_v4()), true)).unwrap();
        let joined = mark_joined(tmp.path(), id).unwrap();
        let forced = mark_forced(tmp.path(), joined).unwrap();
        let (reread, _) = open_or_create(tmp.path(), req(4, Some(id.cluster_id), true)).unwrap();
        assert_eq!(reread, forced);
        assert!(reread.admitted && !reread.joined && !reread.rebuilding);
    }

    /// A joined node stays joined across restarts; format 2 files read as not joined, and a
    /// format 2 file naming the flag (or a format 3 file without it) is damage.
    #[test]
    fn joined_flag_survives_a_reread_and_older_files_are_not_joined() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, _) = open_or_create(tmp.path(), req(4, Some(Uuid::new_v4()), true)).unwrap();
        assert!(!id.joined);
        let joined = mark_joined(tmp.path(), id).unwrap();
        let (reread, _) = open_or_create(tmp.path(), req(4, Some(id.cluster_id), true)).unwrap();
        assert_eq!(reread, joined);
        assert!(reread.admitted && reread.joined && !reread.rebuilding);
        let p = Path::new("NODE");
        let with_crc =
            |body: String| format!("{body}crc32c={:08x}\n", crc32c::crc32c(body.as_bytes()));
        let cluster = Uuid::new_v4();
        let v2 = with_crc(format!(
            "format=2\ncluster={cluster}\nnode=3\nadmitted=1\nrebuilding=0\n"
        ));
        assert!(!NodeIdentity::decode(p, &v2).unwrap().joined);
        let v2_flag = with_crc(format!(
            "format=2\ncluster={cluster}\nnode=3\nadmitted=1\nrebuilding=0\njoined=1\n"
        ));
        assert!(NodeIdentity::decode(p, &v2_flag).is_err());
        let v3_none = with_crc(format!(
            "format=3\ncluster={cluster}\nnode=3\nadmitted=1\nrebuilding=0\n"
        ));
        assert!(NodeIdentity::decode(p, &v3_none).is_err());
        let not_admitted = with_crc(format!(
            "format=3\ncluster={cluster}\nnode=3\nadmitted=0\nrebuilding=0\njoined=1\n"
        ));
        assert!(NodeIdentity::decode(p, &not_admitted).is_err());
    }

    #[test]
    fn wire_cluster_id_is_stable_and_tells_clusters_apart() {
        let id = |u: u128| NodeIdentity {
            cluster_id: Uuid::from_u128(u),
            node_id: 1,
            admitted: true,
            rebuilding: false,
            joined: false,
        };
        assert_eq!(
            id(0x1234_0000_0000_0000_0000_0000_0000_5678).wire_cluster_id(),
            0x1234_0000_0000_5678
        );
        assert_ne!(id(1).wire_cluster_id(), id(2).wire_cluster_id());
    }

    #[test]
    fn oversize_or_binary_file_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(NODE_FILE), vec![0xffu8; 10]).unwrap();
        assert!(matches!(
            read_identity(tmp.path()),
            Err(IdentityError::Corrupt { .. })
        ));
        std::fs::write(tmp.path().join(NODE_FILE), vec![b'a'; 5000]).unwrap();
        assert!(matches!(
            read_identity(tmp.path()),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
