//! Development keys: an Ed25519 signing key the server creates on first start
//! under `DATA_DIR/keys/`, and the `casesync token` command's minting.
//!
//! Production deployments configure an external identity provider's public
//! keys instead; nothing here is needed then.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{EncodingKey, Header};
use sync_core::ids::{DeviceId, UserId};
use zeroize::Zeroizing;

use super::claims::{Audience, Claims, Role};
use super::config::{AuthConfig, TokenAlgorithm, VerificationKey};
use super::error::AuthConfigError;

/// Issuer of development tokens.
pub const DEV_ISSUER: &str = "casesync-dev";
/// Audience of development tokens (and the default audience of the server).
pub const DEV_AUDIENCE: &str = "casesync";

/// Directory under the data dir that holds keys.
pub const KEYS_DIR: &str = "keys";
/// The development signing key: PKCS#8 PEM, mode 0600.
pub const DEV_KEY_FILE: &str = "dev-ed25519.pem";

/// Why development keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    #[error("cannot use key directory or file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600` on it")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} does not hold an Ed25519 PKCS#8 private key")]
    InvalidKeyFile { path: PathBuf },
    #[error("the operating system gave no random bytes")]
    Randomness,
    #[error("development key could not be encoded")]
    Encoding,
    #[error(transparent)]
    Config(#[from] AuthConfigError),
}

/// Why `mint_token` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("device id may not contain `:`; the peer id would be ambiguous")]
    DeviceContainsColon,
    #[error("token lifetime must be between 1 s and {max_secs} s")]
    BadLifetime { max_secs: u64 },
    #[error("the operating system gave no random bytes")]
    Randomness,
    #[error("token could not be signed")]
    Signing,
}

/// Longest lifetime `mint_token` gives a token. Development tokens are still
/// bearer credentials; a week is enough to test with.
pub const MAX_DEV_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The development signing key and the matching verification config.
pub struct DevKeys {
    kid: String,
    encoding: EncodingKey,
    public_pem: String,
    issuer: String,
    audience: String,
}

impl DevKeys {
    /// Loads `DATA_DIR/keys/dev-ed25519.pem`, or creates it (mode 0600, in a
    /// 0700 directory) if it does not exist. A key file readable by group or
    /// others is refused, as ssh does.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, DevKeyError> {
        let dir = data_dir.join(KEYS_DIR);
        create_private_dir(&dir)?;
        let path = dir.join(DEV_KEY_FILE);
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(&dir, &path)?,
            Err(source) => return Err(DevKeyError::Io { path, source }),
        }
        Self::load(&path)
    }

    fn load(path: &Path) -> Result<Self, DevKeyError> {
        let io_err = |source| DevKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(DevKeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        check_private_mode(path, &meta)?;
        let pem = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        let signing =
            SigningKey::from_pkcs8_pem(&pem).map_err(|_| DevKeyError::InvalidKeyFile {
                path: path.to_owned(),
            })?;
        Self::from_signing_key(&signing)
    }

    fn from_signing_key(signing: &SigningKey) -> Result<Self, DevKeyError> {
        let private_pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| DevKeyError::Encoding)?;
        let encoding =
            EncodingKey::from_ed_pem(private_pem.as_bytes()).map_err(|_| DevKeyError::Encoding)?;
        let verifying = signing.verifying_key();
        let public_pem = verifying
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| DevKeyError::Encoding)?;
        // The kid is derived from the public key, so it changes exactly when
        // the key does and needs no file of its own.
        let kid = format!("dev-ed25519-{}", hex(&verifying.as_bytes()[..8]));
        Ok(Self {
            kid,
            encoding,
            public_pem,
            issuer: DEV_ISSUER.to_owned(),
            audience: DEV_AUDIENCE.to_owned(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The same key, minting for a configured issuer and audience (when the
    /// server's `[auth]` section trusts the development key).
    pub fn with_issuer_audience(mut self, issuer: &str, audience: &str) -> Self {
        self.issuer = issuer.to_owned();
        self.audience = audience.to_owned();
        self
    }

    /// The public half, as SPKI PEM.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The verification key for this signing key.
    pub fn verification_key(&self) -> Result<VerificationKey, AuthConfigError> {
        VerificationKey::ed25519_pem(self.kid.clone(), self.public_pem.as_bytes())
    }

    /// An EdDSA config that trusts exactly this key, with the development
    /// issuer and audience and the default leeway.
    pub fn auth_config(&self) -> Result<AuthConfig, AuthConfigError> {
        AuthConfig::new(
            TokenAlgorithm::EdDsa,
            self.issuer.clone(),
            self.audience.clone(),
            vec![self.verification_key()?],
        )
    }
}

impl fmt::Debug for DevKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("signing_key", &"[redacted]")
            .finish()
    }
}

/// Mints a development token for `user` on `device`, valid from `now` (Unix
/// seconds) for `ttl`. It carries a random `jti` so that it can be revoked
/// individually. The result is a credential: print it, never log it.
pub fn mint_token(
    keys: &DevKeys,
    user: &UserId,
    device: &DeviceId,
    role: Role,
    ttl: Duration,
    now: i64,
) -> Result<String, MintError> {
    if device.as_str().contains(':') {
        return Err(MintError::DeviceContainsColon);
    }
    if ttl.is_zero() || ttl > MAX_DEV_TOKEN_TTL {
        return Err(MintError::BadLifetime {
            max_secs: MAX_DEV_TOKEN_TTL.as_secs(),
        });
    }
    let ttl_secs = i64::try_from(ttl.as_secs()).map_err(|_| MintError::BadLifetime {
        max_secs: MAX_DEV_TOKEN_TTL.as_secs(),
    })?;
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|_| MintError::Randomness)?;

    let claims = Claims {
        sub: user.as_str().to_owned(),
        device: device.as_str().to_owned(),
        role,
        exp: now.saturating_add(ttl_secs),
        nbf: None,
        iat: Some(now),
        aud: Audience::One(keys.audience.clone()),
        iss: keys.issuer.clone(),
        jti: Some(URL_SAFE_NO_PAD.encode(jti)),
    };
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(keys.kid.clone());
    jsonwebtoken::encode(&header, &claims, &keys.encoding).map_err(|_| MintError::Signing)
}

fn create_private_dir(dir: &Path) -> Result<(), DevKeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| DevKeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes a fresh key to a temporary file and links it into place. The link
/// fails if another process created the key in the meantime, in which case
/// that key wins and ours is discarded, so two servers starting together on
/// one data dir still agree on one key.
fn create_key_file(dir: &Path, path: &Path) -> Result<(), DevKeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|_| DevKeyError::Randomness)?;
    let signing = SigningKey::from_bytes(&seed);
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| DevKeyError::Encoding)?;

    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| DevKeyError::Randomness)?;
    let tmp = dir.join(format!(".{DEV_KEY_FILE}.{}.tmp", hex(&suffix)));
    let io_err = |p: &Path| {
        let p = p.to_owned();
        move |source| DevKeyError::Io { path: p, source }
    };

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(pem.as_bytes())?;
        file.sync_all()
    });
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(DevKeyError::Io { path: tmp, source });
    }
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp).map_err(io_err(&tmp))?;
    match linked {
        Ok(()) => {
            // Make the new directory entry durable too.
            #[cfg(unix)]
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
            tracing::info!(path = %path.display(), "created development signing key");
            Ok(())
        }
        // Another process created the key first; that one is loaded.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(DevKeyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<(), DevKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DevKeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), DevKeyError> {
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
