//! Encryption at rest of what the store writes: every Raft log entry and
//! every snapshot is sealed with the manager's data encryption key (DEK,
//! ChaCha20-Poly1305) before it reaches redb, so the swarm's secrets — the
//! root CA's key, the join tokens, later the users' secrets — are never in
//! plain text in the data directory. Entries cross the network in plain
//! text inside mutual TLS; each manager seals its own copy with its own key,
//! as SwarmKit's managers do.
//!
//! The DEK is a file of its own (`raft.dek`, 0600), in a format that names
//! its version so a later autolock can store it wrapped by a key the user
//! holds. Data written by versions that sealed nothing is read as it is:
//! sealed values start with [`MAGIC`], which plain JSON never does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Marks a sealed value (and its format's version).
pub const MAGIC: &[u8; 4] = b"FLS1";
/// The first line of the DEK file; the key follows as hex.
const DEK_HEADER: &str = "flotilla-raft-dek-v1 plain";
pub const DEK_FILE: &str = "raft.dek";

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    fn from_bytes(bytes: &[u8]) -> std::io::Result<Sealer> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| std::io::Error::other("the data encryption key has a wrong length"))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// The DEK of the store in `dir`, made (random, 0600) on first use.
    /// The directory itself is made private (0700).
    pub fn load_or_create(dir: &Path) -> std::io::Result<Sealer> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(DEK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                if lines.next() != Some(DEK_HEADER) {
                    return Err(std::io::Error::other(format!(
                        "{}: not a data encryption key this version can read",
                        path.display()
                    )));
                }
                let key = hex_decode(lines.next().unwrap_or_default()).ok_or_else(|| {
                    std::io::Error::other(format!("{}: the key is not hex", path.display()))
                })?;
                Sealer::from_bytes(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let mut key = [0u8; 32];
                rng.fill(&mut key)
                    .map_err(|_| std::io::Error::other("no randomness for a new key"))?;
                let tmp = dir.join(format!("{DEK_FILE}.tmp"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(f, "{DEK_HEADER}\n{}", hex_encode(&key))?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                Sealer::from_bytes(&key)
            }
            Err(e) => Err(e),
        }
    }

    /// `MAGIC`, a random nonce, the ciphertext and its tag.
    pub fn seal(&self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("no randomness for a nonce"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut body,
            )
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        out.extend_from_slice(&body);
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
            })?;
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
        let sealer = Sealer::load_or_create(dir.path()).unwrap();
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
        let again = Sealer::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), plain);
        let other = Sealer::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open(&tampered).is_err());
    }

    #[test]
    fn the_key_file_and_its_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Sealer::load_or_create(&store).unwrap();
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
        let sealer = Sealer::load_or_create(dir.path()).unwrap();
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
