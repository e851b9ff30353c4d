//! The server under test: which kind it is, how to get tokens and cases
//! from it, how to restart it, and its process.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use casesync_tests::Api;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync_core::ids::DocumentId;
use sync_core::model::{self, CaseInit};
use tokio::sync::Semaphore;

use super::conn::host_port;
use super::device::{self, Fleet, FleetOptions, SimDevice};
use super::procwatch::{find_pid_by_port, ProcWatch};
use super::LoadError;

/// The user who creates every case (and so is a member of all of them).
pub const OWNER: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// casesync: tokens, the case API, durable acknowledgements.
    Casesync,
    /// automerge-repo's sync server: no auth, no case API.
    Peer,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Casesync => "casesync",
            ServerKind::Peer => "peer",
        }
    }
}

/// Mints casesync tokens with `casesync token`, a few processes at a time.
#[derive(Debug)]
struct Minter {
    bin: PathBuf,
    data_dir: PathBuf,
    cache: Mutex<HashMap<(String, String, String), String>>,
}

impl Minter {
    async fn mint(&self, user: &str, device: &str, role: &str) -> Result<String, LoadError> {
        let key = (user.to_owned(), device.to_owned(), role.to_owned());
        if let Some(t) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(t.clone());
        }
        let out = tokio::process::Command::new(&self.bin)
            .arg("token")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--user", user, "--device", device, "--role", role, "--ttl", "6h",
            ])
            .env_remove("CASESYNC_DATA_DIR")
            .env("CASESYNC_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(LoadError::io(format!("running {}", self.bin.display())))?;
        if !out.status.success() {
            return Err(LoadError::other(format!(
                "`casesync token` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, token.clone());
        Ok(token)
    }
}

/// The server under test.
#[derive(Debug)]
pub struct Target {
    pub kind: ServerKind,
    pub url: String,
    api: Option<Api>,
    minter: Option<Arc<Minter>>,
    watch: Mutex<Option<ProcWatch>>,
    restart_cmd: Option<String>,
    seed: Mutex<StdRng>,
}

/// Cases ready for a workload: their ids and the heads they start from.
#[derive(Debug, Clone)]
pub struct Cases {
    pub ids: Vec<DocumentId>,
    pub base: BTreeMap<DocumentId, Vec<ChangeHash>>,
}

#[derive(Debug, Clone)]
pub struct TargetOptions {
    pub kind: ServerKind,
    pub url: String,
    pub server_pid: Option<u32>,
    pub casesync_bin: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub restart_cmd: Option<String>,
    pub seed: u64,
}

impl Target {
    pub async fn new(o: TargetOptions) -> Result<Self, LoadError> {
        let hp = host_port(&o.url)?.to_owned();
        let addr = tokio::net::lookup_host(&hp)
            .await
            .map_err(LoadError::io(format!("resolving {hp}")))?
            .next()
            .ok_or_else(|| LoadError::other(format!("{hp} does not resolve")))?;
        let (api, minter) = match o.kind {
            ServerKind::Peer => (None, None),
            ServerKind::Casesync => {
                let data_dir = o.data_dir.clone().ok_or_else(|| {
                    LoadError::other(
                        "--data-dir (the server's) is needed to mint casesync tokens".to_owned(),
                    )
                })?;
                let bin = o
                    .casesync_bin
                    .clone()
                    .unwrap_or_else(casesync_tests::binary_path);
                (
                    Some(Api::new(addr)?),
                    Some(Arc::new(Minter {
                        bin,
                        data_dir,
                        cache: Mutex::new(HashMap::new()),
                    })),
                )
            }
        };
        let pid = o.server_pid.or_else(|| find_pid_by_port(addr.port()));
        Ok(Self {
            kind: o.kind,
            url: o.url,
            api,
            minter,
            watch: Mutex::new(pid.map(ProcWatch::new)),
            restart_cmd: o.restart_cmd,
            seed: Mutex::new(StdRng::seed_from_u64(o.seed)),
        })
    }

    pub fn watch(&self) -> Option<ProcWatch> {
        *self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn next_seed(&self) -> u64 {
        self.seed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random()
    }

    pub fn api(&self) -> Option<&Api> {
        self.api.as_ref()
    }

    pub fn fleet_options(&self, registry: Option<Arc<device::Registry>>) -> FleetOptions {
        FleetOptions {
            url: self.url.clone(),
            registry,
            dial_limit: Some(128),
            reconnect: true,
        }
    }

    /// A token for `user`'s device `name` (none for the peer).
    pub async fn token(
        &self,
        user: &str,
        name: &str,
        role: &str,
    ) -> Result<Option<String>, LoadError> {
        match &self.minter {
            None => Ok(None),
            Some(m) => m.mint(user, name, role).await.map(Some),
        }
    }

    /// Tokens for many (user, device) pairs, minted a few at a time.
    pub async fn tokens(
        &self,
        devices: &[(String, String)],
    ) -> Result<Vec<Option<String>>, LoadError> {
        let Some(minter) = &self.minter else {
            return Ok(vec![None; devices.len()]);
        };
        let limit = Arc::new(Semaphore::new(6));
        let mut tasks = Vec::with_capacity(devices.len());
        for (user, name) in devices {
            let minter = minter.clone();
            let limit = limit.clone();
            let (user, name) = (user.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                minter.mint(&user, &name, "relative").await
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            let token = t
                .await
                .map_err(|e| LoadError::other(format!("token task: {e}")))??;
            out.push(Some(token));
        }
        Ok(out)
    }

    /// A device of `user`.
    pub async fn device(&self, user: &str, name: &str) -> Result<SimDevice, LoadError> {
        let token = self.token(user, name, "relative").await?;
        SimDevice::new(user, name, token, self.next_seed())
    }

    /// Makes each user a member of a case: casesync through an invitation
    /// from the owner that the user accepts (a few at a time); the peer has
    /// no membership at all. Each entry: the user's token and the case.
    pub async fn grant(
        &self,
        memberships: &[(Option<String>, DocumentId)],
    ) -> Result<(), LoadError> {
        let Some(api) = &self.api else {
            return Ok(());
        };
        let owner = self
            .token(OWNER, "owner", "relative")
            .await?
            .ok_or_else(|| LoadError::other("no owner token".to_owned()))?;
        let limit = Arc::new(Semaphore::new(8));
        let mut tasks = Vec::with_capacity(memberships.len());
        for (token, case) in memberships {
            let Some(token) = token.clone() else {
                continue;
            };
            let (api, owner, case, limit) = (api.clone(), owner.clone(), *case, limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                api.join_case(&owner, &token, &case).await
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| LoadError::other(format!("invitation task: {e}")))??;
        }
        Ok(())
    }

    /// Creates `n` cases and learns the heads each starts from. casesync:
    /// `POST /api/cases` (the bench user is the creator, so all its devices
    /// are members). The peer: a device creates each case document and
    /// syncs it, the way a stock client creates documents.
    pub async fn create_cases(&self, n: usize, tag: &str) -> Result<Cases, LoadError> {
        match self.kind {
            ServerKind::Casesync => self.create_cases_api(n).await,
            ServerKind::Peer => self.create_cases_by_device(n, tag).await,
        }
    }

    async fn create_cases_api(&self, n: usize) -> Result<Cases, LoadError> {
        let api = self
            .api
            .as_ref()
            .ok_or_else(|| LoadError::other("no API".to_owned()))?;
        let token = self
            .token(OWNER, "owner", "relative")
            .await?
            .ok_or_else(|| LoadError::other("no token".to_owned()))?;
        let mut ids = Vec::with_capacity(n);
        let mut base = BTreeMap::new();
        for i in 0..n {
            let created = api
                .create_case(&token, &[("person.family_name", &format!("Bench {i}"))])
                .await?;
            let view = api.get_case(&token, &created.id).await?;
            let mut heads = Vec::with_capacity(view.heads.len());
            for h in &view.heads {
                heads.push(h.parse::<ChangeHash>().map_err(|e| {
                    LoadError::other(format!("GET /api/cases: bad head {h:?}: {e}"))
                })?);
            }
            heads.sort();
            ids.push(created.id);
            base.insert(created.id, heads);
        }
        Ok(Cases { ids, base })
    }

    async fn create_cases_by_device(&self, n: usize, tag: &str) -> Result<Cases, LoadError> {
        let mut creator = self.device(OWNER, &format!("creator-{tag}")).await?;
        let mut rng = StdRng::seed_from_u64(self.next_seed());
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            // A UUID v4, as stock clients make (automerge-repo 1.x refuses
            // document ids that are not UUIDs).
            let mut bytes: [u8; 16] = rng.random();
            bytes[6] = (bytes[6] & 0x0f) | 0x40;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            let id = DocumentId::from_bytes(bytes);
            creator.open_empty(id);
            let init = CaseInit {
                created_by: OWNER.to_owned(),
                coordination: None,
            };
            creator.change(&id, None, |am| {
                model::create_case(am, &init, casesync_tests::now_ms()).map(Some)
            })?;
            let edit = model::Edit::SetField {
                field: model::Field::Person(model::PersonField::FamilyName),
                value: model::FieldValue::Str(format!("Bench {i}")),
            };
            creator.edit(&id, &edit, None)?;
            ids.push(id);
        }
        let base: BTreeMap<DocumentId, Vec<ChangeHash>> =
            ids.iter().map(|id| (*id, creator.heads(id))).collect();
        let fleet = Fleet::launch(vec![creator], &self.fleet_options(None));
        let waited = fleet
            .wait_all(Duration::from_secs(120), |p| p.pending == 0)
            .await;
        let mut back = fleet.stop().await?;
        if waited.missing > 0 {
            let detail = back
                .pop()
                .map(|(d, r)| format!("{:?} {:?} {:?}", r.err(), d.drop_reasons, d.frame_errors))
                .unwrap_or_default();
            return Err(LoadError::other(format!(
                "the server did not acknowledge the created cases within 120 s: {detail}"
            )));
        }
        Ok(Cases { ids, base })
    }

    /// Restarts the server with `--restart-cmd` (its last line of output is
    /// the new pid) and waits until it accepts connections. `Ok(false)`
    /// when no restart command was given.
    pub async fn restart(&self) -> Result<bool, LoadError> {
        let Some(cmd) = &self.restart_cmd else {
            return Ok(false);
        };
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .map_err(LoadError::io(format!("running --restart-cmd {cmd:?}")))?;
        if !out.status.success() {
            return Err(LoadError::other(format!(
                "--restart-cmd failed with {}",
                out.status
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid = stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().parse::<u32>().ok());
        let hp = host_port(&self.url)?.to_owned();
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&hp).await.is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(LoadError::Timeout {
                    what: format!("{hp} to accept connections after the restart"),
                    secs: 60.0,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(api) = &self.api {
            while !api.healthz().await.unwrap_or(false) {
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(LoadError::Timeout {
                        what: "/healthz after the restart".to_owned(),
                        secs: 60.0,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let port = hp.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        let pid = pid.or_else(|| port.and_then(find_pid_by_port));
        *self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pid.map(ProcWatch::new);
        Ok(true)
    }
}
