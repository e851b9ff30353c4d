//! A power cut a test can pull: an in-memory FUSE filesystem that keeps,
//! for every file, what was written and what was made durable, and can be
//! frozen at any instant.
//!
//! SIGKILL alone proves little about durability: the kernel still writes
//! the dead process's page cache to disk. [`PowerCutFs`] is the disk *and*
//! the page cache, so it can throw the page cache away.
//!
//! The model, for the strictest filesystem POSIX allows:
//! - A regular file has its **current** bytes (what `read` and `mmap` see)
//!   and its **durable** bytes (what survives a cut). `write`, `truncate`
//!   and writes back of shared mappings change the current bytes only;
//!   `fsync`/`fdatasync` of the file, through any handle, copies the current
//!   bytes (length included) to the durable ones.
//! - A directory has its current entries and its durable entries. `create`,
//!   `mkdir`, `unlink`, `rmdir`, `rename` and `link` change the current
//!   entries only; `fsync` of the directory makes its current entries
//!   durable. So a new file survives only if its directory was fsynced after
//!   it was created, and its bytes only if the file was fsynced; a file whose
//!   name is durable but whose bytes never were comes back empty.
//! - A cut ([`PowerCutFs::cut`], or an armed [`CutTrigger`]) happens between
//!   two operations (every operation is atomic under one lock): from then on
//!   every operation fails with `EIO`, as on a disk that lost power. The
//!   durable image ([`PowerCutFs::write_durable_image`]) is what a reboot
//!   would find.
//!
//! What it does not model: torn or reordered writes *within* an unsynced
//! region (unsynced bytes are all lost, never half kept, which is the case a
//! journal must survive anyway, but not the only one a real disk can
//! produce); a disk that lies about `fsync`; metadata other than names and
//! sizes (modes, owners and times are kept as they are at the cut, as if
//! they were always durable); and unsynced writes the kernel would have
//! written back anyway before the cut (it always drops them: the worst
//! case). Hard links to a file share its bytes; symlinks, special files and
//! extended attributes are not supported.
//!
//! Shared `mmap` works (SQLite's `-shm` file): the filesystem does not ask
//! for direct I/O, so the kernel's page cache backs the mapping and writes
//! it back through `write`. POSIX locks are left to the kernel (the
//! filesystem does not announce `FUSE_POSIX_LOCKS`), which is right for
//! processes on one machine.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tempfile::TempDir;

/// How long the kernel may cache names and attributes. Every change goes
/// through the kernel, so its caches never go stale before a cut; after one,
/// nothing is trusted anyway.
const TTL: Duration = Duration::from_secs(1);
const BLOCK: u64 = 4096;

/// Why the filesystem could not be mounted or imaged.
#[derive(Debug, thiserror::Error)]
pub enum PowerCutError {
    #[error(
        "cannot mount the power-cut FUSE filesystem at {path}: {source} \
         (it needs /dev/fuse and root or fusermount3: `apt-get install -y fuse3`)"
    )]
    Mount { path: PathBuf, source: io::Error },
    #[error("power-cut filesystem: {0}")]
    Io(#[from] io::Error),
}

/// An automatic cut: before the `after`-th mutating operation counted from
/// the moment the trigger is armed (1 = the very next one), optionally only
/// counting operations on files named `file` (e.g. the main database file,
/// which is written only by checkpoints). The triggering operation fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutTrigger {
    pub after: u64,
    pub file: Option<OsString>,
}

/// What was in flight when the power went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Mutating operations before the cut, since the mount.
    pub ops: u64,
    /// Files (by the name they were created with) whose current bytes
    /// differed from their durable bytes, and how many bytes were unsynced.
    pub unsynced: BTreeMap<OsString, u64>,
    /// Directories with entries created, removed or renamed but not synced.
    pub unsynced_dirs: usize,
    /// The cut came from an armed [`CutTrigger`].
    pub triggered: bool,
}

impl CutReport {
    /// Unsynced bytes in the file named `name` (0 if none or no such file).
    pub fn unsynced_bytes(&self, name: &str) -> u64 {
        self.unsynced.get(OsStr::new(name)).copied().unwrap_or(0)
    }
}

/// Counters since the mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: u64,
    pub writes: u64,
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
}

#[derive(Debug)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges of `current` written since the last fsync.
    dirty: Vec<(usize, usize)>,
    /// The length changed since the last fsync.
    resized: bool,
}

impl FileData {
    fn new() -> Self {
        Self {
            current: Vec::new(),
            durable: Vec::new(),
            dirty: Vec::new(),
            resized: false,
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        let len = self.current.len();
        if end > len {
            self.current.resize(end, 0);
            self.resized = true;
            if offset > len {
                // The hole reads as zeros now, whatever the durable bytes
                // there were before a shrink.
                self.mark(len, offset);
            }
        }
        self.current[offset..end].copy_from_slice(data);
        self.mark(offset, end);
    }

    fn truncate(&mut self, len: usize) {
        let old = self.current.len();
        self.current.resize(len, 0);
        if len != old {
            self.resized = true;
        }
        if len > old {
            self.mark(old, len);
        }
    }

    /// Records a dirty range, merging with the previous one when they touch
    /// (SQLite appends to its WAL sequentially, so this stays short).
    fn mark(&mut self, start: usize, end: usize) {
        if let Some(last) = self.dirty.last_mut() {
            if start <= last.1 && end >= last.0 {
                *last = (last.0.min(start), last.1.max(end));
                return;
            }
        }
        self.dirty.push((start, end));
    }

    fn sync(&mut self) {
        self.durable.resize(self.current.len(), 0);
        let len = self.current.len();
        for (start, end) in self.dirty.drain(..) {
            let (start, end) = (start.min(len), end.min(len));
            self.durable[start..end].copy_from_slice(&self.current[start..end]);
        }
        self.resized = false;
    }

    fn unsynced_bytes(&self) -> u64 {
        let len = self.current.len();
        let dirty: usize = self
            .dirty
            .iter()
            .map(|&(s, e)| e.min(len).saturating_sub(s.min(len)))
            .sum();
        // Growth is covered by the dirty ranges; a shrink is not.
        let shrunk = if self.resized {
            self.durable.len().saturating_sub(len)
        } else {
            0
        };
        (dirty + shrunk) as u64
    }
}

#[derive(Debug)]
struct DirData {
    current: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    parent: u64,
}

#[derive(Debug)]
enum Content {
    File(FileData),
    Dir(DirData),
}

#[derive(Debug)]
struct Node {
    /// The name the node was created with (for triggers and reports).
    name: OsString,
    content: Content,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

#[derive(Debug)]
struct State {
    /// Inode `n` is `nodes[n - 1]`. Nodes are never freed: an unlinked file
    /// may still be named by a durable entry, and a test's filesystem is
    /// small and short-lived.
    nodes: Vec<Node>,
    stats: Stats,
    cut: Option<CutReport>,
    trigger: Option<CutTrigger>,
}

impl State {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(i as usize))
            .ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(i as usize))
            .ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match &self.node(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::File(f) => Ok(f),
            Content::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn alive(&self) -> Result<(), Errno> {
        if self.cut.is_some() {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    /// Counts one mutating operation on `ino`, cutting the power first if
    /// an armed trigger says this is the one.
    fn mutate(&mut self, ino: u64) -> Result<(), Errno> {
        self.alive()?;
        let counts = match &self.trigger {
            Some(t) => match &t.file {
                Some(name) => self.node(ino).map(|n| &n.name == name).unwrap_or(false),
                None => true,
            },
            None => false,
        };
        if counts {
            if let Some(t) = &mut self.trigger {
                t.after = t.after.saturating_sub(1);
                if t.after == 0 {
                    self.trigger = None;
                    self.cut_now(true);
                    return Err(Errno::EIO);
                }
            }
        }
        self.stats.ops += 1;
        Ok(())
    }

    fn cut_now(&mut self, triggered: bool) -> CutReport {
        if let Some(report) = &self.cut {
            return report.clone();
        }
        let report = CutReport {
            triggered,
            ..self.unsynced()
        };
        self.cut = Some(report.clone());
        report
    }

    /// What a cut now would lose.
    fn unsynced(&self) -> CutReport {
        let mut report = CutReport {
            ops: self.stats.ops,
            ..CutReport::default()
        };
        for node in &self.nodes {
            match &node.content {
                Content::File(f) => {
                    let bytes = f.unsynced_bytes();
                    if bytes > 0 {
                        *report.unsynced.entry(node.name.clone()).or_default() += bytes;
                    }
                }
                Content::Dir(d) => {
                    if d.current != d.durable {
                        report.unsynced_dirs += 1;
                    }
                }
            }
        }
        report
    }

    /// `sync(2)`: everything becomes durable.
    fn sync_all(&mut self) {
        for node in &mut self.nodes {
            match &mut node.content {
                Content::File(f) => f.sync(),
                Content::Dir(d) => d.durable = d.current.clone(),
            }
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let (kind, size) = match &node.content {
            Content::File(f) => (FileType::RegularFile, f.current.len() as u64),
            Content::Dir(d) => (FileType::Directory, d.current.len() as u64),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind,
            perm: node.perm,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .current
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn add_node(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        content: Content,
    ) -> Result<u64, Errno> {
        self.mutate(parent)?;
        if self.dir(parent)?.current.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let now = SystemTime::now();
        let is_dir = matches!(content, Content::Dir(_));
        self.nodes.push(Node {
            name: name.to_owned(),
            content,
            perm: (mode & !umask & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            nlink: if is_dir { 2 } else { 1 },
            mtime: now,
            ctime: now,
        });
        let ino = self.nodes.len() as u64;
        let dir = self.dir_mut(parent)?;
        dir.current.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn remove_entry(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        self.mutate(parent)?;
        let ino = self.lookup(parent, name)?;
        match (&self.node(ino)?.content, want_dir) {
            (Content::Dir(d), true) if !d.current.is_empty() => return Err(Errno::ENOTEMPTY),
            (Content::Dir(_), true) | (Content::File(_), false) => {}
            (Content::Dir(_), false) => return Err(Errno::EISDIR),
            (Content::File(_), true) => return Err(Errno::ENOTDIR),
        }
        self.dir_mut(parent)?.current.remove(name);
        let node = self.node_mut(ino)?;
        node.nlink = node.nlink.saturating_sub(if want_dir { 2 } else { 1 });
        node.ctime = SystemTime::now();
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        self.mutate(parent)?;
        let ino = self.lookup(parent, name)?;
        self.dir(newparent)?;
        if let Ok(existing) = self.lookup(newparent, newname) {
            if existing == ino {
                return Ok(());
            }
            let node = self.node_mut(existing)?;
            match &node.content {
                Content::Dir(d) if !d.current.is_empty() => return Err(Errno::ENOTEMPTY),
                Content::Dir(_) => node.nlink = 0,
                Content::File(_) => node.nlink = node.nlink.saturating_sub(1),
            }
        }
        self.dir_mut(parent)?.current.remove(name);
        self.dir_mut(newparent)?
            .current
            .insert(newname.to_owned(), ino);
        if let Content::Dir(d) = &mut self.node_mut(ino)?.content {
            d.parent = newparent;
        }
        Ok(())
    }

    /// Writes the durable tree under `dir` to `dest`.
    fn write_image(&self, dir: u64, dest: &Path) -> io::Result<()> {
        let entries = match self.dir(dir) {
            Ok(d) => &d.durable,
            Err(_) => return Ok(()),
        };
        for (name, &ino) in entries {
            let Ok(node) = self.node(ino) else { continue };
            let path = dest.join(name);
            match &node.content {
                Content::File(f) => std::fs::write(&path, &f.durable)?,
                Content::Dir(_) => {
                    std::fs::create_dir(&path)?;
                    self.write_image(ino, &path)?;
                }
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(node.perm.into()))?;
        }
        Ok(())
    }
}

/// The `fuser` side: every request locks the state once.
#[derive(Debug)]
struct FsHandler {
    state: Arc<Mutex<State>>,
}

impl FsHandler {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the model as consistent as any
    // single operation does; keep going.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FsHandler {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.lock();
        match state
            .alive()
            .and_then(|()| state.lookup(parent.0, name))
            .and_then(|ino| state.attr(ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.lock();
        match state.alive().and_then(|()| state.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.lock();
        let result = (|| {
            state.alive()?;
            if let Some(size) = size {
                state.mutate(ino.0)?;
                let len = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
                state.file_mut(ino.0)?.truncate(len);
            }
            let node = state.node_mut(ino.0)?;
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(mtime) = mtime {
                node.mtime = to_time(mtime);
            }
            node.ctime = SystemTime::now();
            state.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.lock();
        let content = Content::Dir(DirData {
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent: parent.0,
        });
        let result = state
            .add_node(req, parent.0, name, mode, umask, content)
            .and_then(|ino| {
                state.node_mut(parent.0)?.nlink += 1;
                state.attr(ino)
            });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove_entry(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.lock();
        let result = state.remove_entry(parent.0, name, true).and_then(|()| {
            let node = state.node_mut(parent.0)?;
            node.nlink = node.nlink.saturating_sub(1);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_NOREPLACE / RENAME_EXCHANGE: not needed here.
            reply.error(Errno::EINVAL);
            return;
        }
        match self.lock().rename(parent.0, name, newparent.0, newname) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.lock();
        let result = (|| {
            state.mutate(newparent.0)?;
            if !matches!(state.node(ino.0)?.content, Content::File(_)) {
                return Err(Errno::EPERM);
            }
            let dir = state.dir_mut(newparent.0)?;
            if dir.current.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            dir.current.insert(newname.to_owned(), ino.0);
            let node = state.node_mut(ino.0)?;
            node.nlink += 1;
            node.ctime = SystemTime::now();
            state.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let state = self.lock();
        match state.alive().and_then(|()| state.node(ino.0).map(|_| ())) {
            // No FOPEN_DIRECT_IO: the page cache must back shared mmaps.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.lock();
        let result = state.alive().and_then(|()| {
            let file = state.file_mut(ino.0)?;
            let len = file.current.len();
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
            let end = start.saturating_add(size as usize).min(len);
            Ok(file.current[start..end].to_vec())
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.lock();
        let result = (|| {
            state.mutate(ino.0)?;
            let offset = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
            state.file_mut(ino.0)?.write(offset, data);
            state.stats.writes += 1;
            let node = state.node_mut(ino.0)?;
            node.mtime = SystemTime::now();
            Ok(())
        })();
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync.
        match self.lock().alive() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Must not answer ENOSYS: the kernel would then treat every later
        // fsync as a success without asking.
        let mut state = self.lock();
        let result = (|| {
            state.mutate(ino.0)?;
            match &mut state.node_mut(ino.0)?.content {
                Content::File(f) => f.sync(),
                Content::Dir(d) => d.durable = d.current.clone(),
            }
            state.stats.fsyncs += 1;
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let state = self.lock();
        match state.alive().and_then(|()| state.dir(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.lock();
        let dir = match state.alive().and_then(|()| state.dir(ino.0)) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let mut entries: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (dir.parent, FileType::Directory, "..".into()),
        ];
        for (name, &child) in &dir.current {
            let kind = match state.node(child).map(|n| &n.content) {
                Ok(Content::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.lock();
        let result = (|| {
            state.mutate(ino.0)?;
            let dir = state.dir_mut(ino.0)?;
            dir.durable = dir.current.clone();
            state.stats.dir_fsyncs += 1;
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = (1u64 << 30) / BLOCK;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.lock();
        let result = state
            .add_node(
                req,
                parent.0,
                name,
                mode,
                umask,
                Content::File(FileData::new()),
            )
            .and_then(|ino| state.attr(ino));
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`FsHandler`] on a fresh temporary directory. Dropping it
/// unmounts (after a cut, so nothing more can reach the "disk").
#[derive(Debug)]
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    // Declared after `session`: the mountpoint is removed after the unmount.
    mountpoint: TempDir,
}

impl PowerCutFs {
    /// Mounts a fresh, empty filesystem. Fails (never silently) when FUSE
    /// is not available.
    pub fn mount() -> Result<Self, PowerCutError> {
        let mountpoint = tempfile::Builder::new()
            .prefix("casesync-powercut-")
            .tempdir()?;
        let meta = std::fs::metadata(mountpoint.path())?;
        let now = SystemTime::now();
        let root = Node {
            name: OsString::new(),
            content: Content::Dir(DirData {
                current: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent: 1,
            }),
            perm: 0o755,
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: 2,
            mtime: now,
            ctime: now,
        };
        let state = Arc::new(Mutex::new(State {
            nodes: vec![root],
            stats: Stats::default(),
            cut: None,
            trigger: None,
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("casesync-powercut".into()),
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(
            FsHandler {
                state: state.clone(),
            },
            mountpoint.path(),
            &config,
        )
        .map_err(|source| PowerCutError::Mount {
            path: mountpoint.path().to_owned(),
            source,
        })?;
        Ok(Self {
            state,
            session: Some(session),
            mountpoint,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// Cuts the power now (if no trigger did already). Idempotent: returns
    /// the report of the first cut.
    pub fn cut(&self) -> CutReport {
        lock(&self.state).cut_now(false)
    }

    /// The report of the cut, once there was one.
    pub fn cut_report(&self) -> Option<CutReport> {
        lock(&self.state).cut.clone()
    }

    /// Arms an automatic cut (replacing any armed one).
    pub fn arm(&self, trigger: CutTrigger) {
        lock(&self.state).trigger = Some(trigger);
    }

    /// Disarms the automatic cut, if it has not fired.
    pub fn disarm(&self) {
        lock(&self.state).trigger = None;
    }

    /// What a cut now would lose (nothing is cut).
    pub fn unsynced(&self) -> CutReport {
        lock(&self.state).unsynced()
    }

    /// Makes everything durable, as `sync(2)` or the kernel's periodic
    /// writeback would (on Linux, dirty pages older than about 30 s), and
    /// returns what was not durable before. Does nothing after a cut.
    pub fn sync_all(&self) -> CutReport {
        let mut state = lock(&self.state);
        let before = state.unsynced();
        if state.cut.is_none() {
            state.sync_all();
        }
        before
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats
    }

    /// Writes what a reboot would find (durable names, durable bytes) into
    /// `dest`, an existing empty directory on a real filesystem. Works with
    /// or without a cut; after one, it is the state at the cut.
    pub fn write_durable_image(&self, dest: &Path) -> Result<(), PowerCutError> {
        let state = lock(&self.state);
        state.write_image(1, dest)?;
        Ok(())
    }

    /// Cuts the power (if not yet cut) and unmounts. Every process using
    /// the filesystem should be gone first: if one still holds a file open,
    /// the mount is detached lazily and this returns the error.
    pub fn unmount(mut self) -> Result<(), PowerCutError> {
        self.detach()
    }

    fn detach(&mut self) -> Result<(), PowerCutError> {
        self.cut();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        session.umount_and_join().map_err(|e| {
            // Busy: detach it anyway, so that no dead mount outlives the
            // test (the kernel finishes once the last file is closed).
            let path = self.mountpoint.path();
            let detached = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success())
                || std::process::Command::new("umount")
                    .arg("-l")
                    .arg(path)
                    .status()
                    .is_ok_and(|s| s.success());
            PowerCutError::Io(io::Error::other(format!(
                "unmounting {}: {e} (lazily detached: {detached})",
                path.display()
            )))
        })
    }
}

impl Drop for PowerCutFs {
    /// A test that failed half-way still unmounts (after a cut, so that a
    /// server still running gets `EIO` rather than a dead mount).
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
