//! Encryption at rest of what the store writes: every Raft log entry and
//! every snapshot is sealed with the manager's data encryption key (DEK,
//! ChaCha20-Poly1305) before it reaches redb, so the swarm's secrets — the
//! root CA's key, the join tokens, later the users' secrets — are never in
//! plain text in the data directory. Entries cross the network in plain
//! text inside mutual TLS; each manager seals its own copy with its own key,
//! as SwarmKit's managers do.
//!
//! The DEK is a file of its own (`raft.dek`, 0600). In a swarm with
//! autolock it is stored wrapped by the swarm's unlock key ([`UnlockKey`]),
//! which only the user holds once it has been printed: a manager that
//! restarts cannot read its own log until it is given the key (`swarm
//! unlock`). Data written by versions that sealed nothing is read as it
//! is: sealed values start with [`MAGIC`], which plain JSON never does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Marks a sealed value (and its format's version).
pub const MAGIC: &[u8; 4] = b"FLS1";
/// The first line of the DEK file; the key follows as hex.
const DEK_HEADER: &str = "flotilla-raft-dek-v1 plain";
/// The first line of a DEK file wrapped by an unlock key; the wrapped key
/// follows as hex.
const DEK_LOCKED_HEADER: &str = "flotilla-raft-dek-v1 locked";
pub const DEK_FILE: &str = "raft.dek";

/// Why a locked manager's keys did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("the data encryption key is locked: an unlock key is needed")]
    Locked,
    #[error("the unlock key does not open this manager's keys")]
    WrongKey,
}

pub struct Sealer {
    key: LessSafeKey,
    /// Kept to wrap it again when the unlock key changes.
    raw: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    fn from_bytes(bytes: &[u8]) -> std::io::Result<Sealer> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| std::io::Error::other("the data encryption key has a wrong length"))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw)
            .map_err(|_| std::io::Error::other("the data encryption key has a wrong length"))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            raw,
            rng: SystemRandom::new(),
        })
    }

    /// Whether the DEK in `dir` is wrapped by an unlock key.
    pub fn is_locked(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join(DEK_FILE))
            .is_ok_and(|t| t.lines().next() == Some(DEK_LOCKED_HEADER))
    }

    /// The DEK of the store in `dir`, made (random, 0600) on first use and
    /// then stored wrapped by `unlock` if given. The directory itself is
    /// made private (0700). A wrapped DEK needs its unlock key: without one
    /// the error is [`LockError::Locked`], with another [`LockError::WrongKey`].
    pub fn load_or_create(dir: &Path, unlock: Option<&UnlockKey>) -> std::io::Result<Sealer> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(DEK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                let header = lines.next();
                let bad_hex =
                    || std::io::Error::other(format!("{}: the key is not hex", path.display()));
                let stored = hex_decode(lines.next().unwrap_or_default()).ok_or_else(bad_hex)?;
                match header {
                    Some(DEK_HEADER) => Sealer::from_bytes(&stored),
                    Some(DEK_LOCKED_HEADER) => {
                        let unlock =
                            unlock.ok_or_else(|| std::io::Error::other(LockError::Locked))?;
                        let key = unlock
                            .unwrap(&stored)
                            .map_err(|_| std::io::Error::other(LockError::WrongKey))?;
                        Sealer::from_bytes(&key)
                    }
                    _ => Err(std::io::Error::other(format!(
                        "{}: not a data encryption key this version can read",
                        path.display()
                    ))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let mut key = [0u8; 32];
                rng.fill(&mut key)
                    .map_err(|_| std::io::Error::other("no randomness for a new key"))?;
                let sealer = Sealer::from_bytes(&key)?;
                sealer.store_key(dir, unlock)?;
                Ok(sealer)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the DEK file again: wrapped by `unlock`, or plain without one
    /// (autolock turned on, rotated, or off).
    pub fn store_key(&self, dir: &Path, unlock: Option<&UnlockKey>) -> std::io::Result<()> {
        let text = match unlock {
            Some(k) => format!("{DEK_LOCKED_HEADER}\n{}\n", hex_encode(&k.wrap(&self.raw)?)),
            None => format!("{DEK_HEADER}\n{}\n", hex_encode(&self.raw)),
        };
        write_private(&dir.join(DEK_FILE), text.as_bytes())
    }

    fn nonce(&self) -> std::io::Result<[u8; NONCE_LEN]> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("no randomness for a nonce"))?;
        Ok(nonce)
    }

    /// `MAGIC`, a random nonce, the ciphertext and its tag, in one buffer
    /// sealed in place.
    pub fn seal(&self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let nonce = self.nonce()?;
        let start = MAGIC.len() + NONCE_LEN;
        let mut out = Vec::with_capacity(start + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut out[start..],
            )
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The plain text of a sealed value; a value written unsealed (by an
    /// older version) as it is.
    pub fn open(&self, stored: &[u8]) -> std::io::Result<Vec<u8>> {
        let Some(rest) = stored.strip_prefix(MAGIC) else {
            return Ok(stored.to_vec());
        };
        if rest.len() < NONCE_LEN {
            return Err(std::io::Error::other("a sealed value is truncated"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| std::io::Error::other("a sealed value has a bad nonce"))?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(MAGIC), &mut body)
            .map_err(|_| {
                std::io::Error::other(
                    "a sealed value does not open with this manager's data encryption key (raft.dek replaced or damaged?)",
                )
            })?
            .len();
        // The plain text is the start of the buffer it was opened in.
        body.truncate(plain);
        Ok(body)
    }

    /// Seals `buf` in place as one piece of a longer whole: on return it
    /// holds a random nonce, the ciphertext and its tag. `aad` binds the
    /// piece to its place (the caller's format and position), so pieces
    /// cannot be reordered, swapped between files or cut off unnoticed.
    pub fn seal_piece(&self, aad: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
        let nonce = self.nonce()?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        buf.splice(0..0, nonce);
        Ok(())
    }

    /// Opens a piece sealed by [`Sealer::seal_piece`] with the same `aad`,
    /// in place: the plain text is the start of `buf` after it returns.
    pub fn open_piece(&self, aad: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.len() < NONCE_LEN {
            return Err(std::io::Error::other("a sealed piece is truncated"));
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN])
            .map_err(|_| std::io::Error::other("a sealed piece has a bad nonce"))?;
        let plain = self
            .key
            .open_within(nonce, Aad::from(aad), buf, NONCE_LEN..)
            .map_err(|_| {
                std::io::Error::other(
                    "a sealed piece does not open with this manager's data encryption key (raft.dek replaced, or the file damaged?)",
                )
            })?
            .len();
        buf.truncate(plain);
        Ok(())
    }
}

/// Written whole or not at all, 0600, synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The key an autolocked swarm's managers keep their own keys wrapped
/// with (their DEK, their TLS key). Shown to the user as SwarmKit shows
/// it: `SWMKEY-1-` and 32 random bytes in unpadded base64.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

/// Marks a value wrapped by an unlock key.
pub const WRAPPED_MAGIC: &[u8; 4] = b"FLK1";
const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl UnlockKey {
    pub fn generate() -> std::io::Result<UnlockKey> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| std::io::Error::other("no randomness for a new key"))?;
        Ok(UnlockKey(key))
    }

    /// Reads a key as the user gives it back; SwarmKit's error otherwise.
    pub fn parse(text: &str) -> Result<UnlockKey, String> {
        use base64::Engine;
        let invalid = || "invalid key string".to_string();
        let body = text
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or_else(invalid)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| invalid())?;
        bytes.try_into().map(UnlockKey).map_err(|_| invalid())
    }

    /// The form the user is shown and gives back.
    pub fn human(&self) -> String {
        use base64::Engine;
        format!(
            "{UNLOCK_KEY_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
        )
    }

    /// The wrapping key: derived, so the key the user holds is never used
    /// as a cipher key itself.
    fn aead(&self) -> LessSafeKey {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"flotilla unlock key v1\0");
        ctx.update(&self.0);
        let derived = ctx.finish();
        // 32 bytes: CHACHA20_POLY1305's key length.
        let key = UnboundKey::new(&CHACHA20_POLY1305, derived.as_ref())
            .unwrap_or_else(|_| unreachable!("SHA-256 is 32 bytes"));
        LessSafeKey::new(key)
    }

    /// [`WRAPPED_MAGIC`], a random nonce, the ciphertext and its tag.
    pub fn wrap(&self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("no randomness for a nonce"))?;
        let mut body = plain.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAPPED_MAGIC),
                &mut body,
            )
            .map_err(|_| std::io::Error::other("wrapping failed"))?;
        let mut out = Vec::with_capacity(WRAPPED_MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(WRAPPED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// What [`UnlockKey::wrap`] wrapped, if this is the key it used.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, LockError> {
        let rest = wrapped
            .strip_prefix(WRAPPED_MAGIC)
            .filter(|r| r.len() >= NONCE_LEN)
            .ok_or(LockError::WrongKey)?;
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| LockError::WrongKey)?;
        let mut body = body.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(WRAPPED_MAGIC), &mut body)
            .map_err(|_| LockError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_hide_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path(), None).unwrap();
        let plain = br#"{"root_ca_key":"-----BEGIN PRIVATE KEY-----"}"#;
        let sealed = sealer.seal(plain).unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
        assert_eq!(sealer.open(&sealed).unwrap(), plain);
        // Two seals of one text differ (a fresh nonce each).
        assert_ne!(sealer.seal(plain).unwrap(), sealed);
        // What an older version wrote unsealed reads as it is.
        assert_eq!(sealer.open(plain).unwrap(), plain);
        // The same key comes back from the file; another key cannot open.
        let again = Sealer::load_or_create(dir.path(), None).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), plain);
        let other = Sealer::load_or_create(tempfile::tempdir().unwrap().path(), None).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open(&tampered).is_err());
    }

    #[test]
    fn a_locked_key_needs_its_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = UnlockKey::generate().unwrap();
        let sealer = Sealer::load_or_create(dir.path(), Some(&key)).unwrap();
        let sealed = sealer.seal(b"secret").unwrap();
        assert!(Sealer::is_locked(dir.path()));
        let text = std::fs::read_to_string(dir.path().join(DEK_FILE)).unwrap();
        assert!(
            !text.contains(&hex_encode(&sealer.raw)),
            "the DEK is not in the clear"
        );
        let err = |r: std::io::Result<Sealer>| {
            let e = r.expect_err("refused");
            e.get_ref()
                .and_then(|i| i.downcast_ref::<LockError>())
                .cloned()
        };
        assert_eq!(
            err(Sealer::load_or_create(dir.path(), None)),
            Some(LockError::Locked)
        );
        let other = UnlockKey::generate().unwrap();
        assert_eq!(
            err(Sealer::load_or_create(dir.path(), Some(&other))),
            Some(LockError::WrongKey)
        );
        // The key as the user types it back opens it.
        let typed = UnlockKey::parse(&key.human()).unwrap();
        let again = Sealer::load_or_create(dir.path(), Some(&typed)).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"secret");
        // Rotated, then unlocked for good.
        again.store_key(dir.path(), Some(&other)).unwrap();
        assert!(Sealer::load_or_create(dir.path(), Some(&other)).is_ok());
        again.store_key(dir.path(), None).unwrap();
        assert!(!Sealer::is_locked(dir.path()));
        let plain = Sealer::load_or_create(dir.path(), None).unwrap();
        assert_eq!(plain.open(&sealed).unwrap(), b"secret");
    }

    #[test]
    fn unlock_keys_read_as_swarmkit_writes_them() {
        let key = UnlockKey::generate().unwrap();
        let human = key.human();
        assert!(human.starts_with("SWMKEY-1-"));
        assert_eq!(human.len(), "SWMKEY-1-".len() + 43);
        assert_eq!(UnlockKey::parse(&human).unwrap(), key);
        for bad in [
            "",
            "SWMKEY-1-",
            "SWMKEY-2-abc",
            "SWMKEY-1-!!!!",
            "SWMKEY-1-YWJj",
        ] {
            assert_eq!(
                UnlockKey::parse(bad).unwrap_err(),
                "invalid key string",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_file_and_its_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Sealer::load_or_create(&store, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join(DEK_FILE)), 0o600);
    }
}

/// Not a test: what sealing costs, printed (BENCHMARKS.md).
/// `cargo test --release -p flotilla-store seal_cost -- --ignored --nocapture`
#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore]
    fn seal_cost() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path(), None).unwrap();
        for (what, size, rounds) in [
            ("a 2 KiB log entry", 2 << 10, 20_000),
            ("a 64 MiB snapshot", 64 << 20, 3),
        ] {
            let plain = vec![b'x'; size];
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                let sealed = sealer.seal(&plain).unwrap();
                assert_eq!(sealer.open(&sealed).unwrap().len(), size);
            }
            let each = start.elapsed() / rounds;
            let mib_s = size as f64 / each.as_secs_f64() / (1 << 20) as f64;
            println!("seal + open {what}: {each:?} each, {mib_s:.0} MiB/s");
        }
    }
}
