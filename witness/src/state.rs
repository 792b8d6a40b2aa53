//! What the witness remembers: for each log origin, the latest checkpoint it cosigned, kept in
//! sled. Advancing is a compare-and-swap on the origin's record, so checking the old size and
//! storing the new checkpoint is one atomic step: of two requests that start from the same
//! state, exactly one can win.

use std::path::Path;

use reprolog_verifier::merkle::Hash;

/// The latest cosigned checkpoint of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    pub size: u64,
    pub root: Hash,
    /// The checkpoint note with this witness's cosignature.
    pub note: String,
}

impl Latest {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.size.to_be_bytes().to_vec();
        v.extend_from_slice(&self.root);
        v.extend_from_slice(self.note.as_bytes());
        v
    }

    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let corrupt = || StateError::Corrupt("witness record is malformed".into());
        let (size, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (root, note) = rest.split_first_chunk::<32>().ok_or_else(corrupt)?;
        Ok(Latest {
            size: u64::from_be_bytes(*size),
            root: *root,
            note: String::from_utf8(note.to_vec()).map_err(|_| corrupt())?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage: {0}")]
    Engine(String),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
}

fn engine(e: sled::Error) -> StateError {
    StateError::Engine(e.to_string())
}

pub struct State {
    db: sled::Db,
    latest: sled::Tree,
}

impl State {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let db = sled::open(dir).map_err(engine)?;
        let latest = db.open_tree("latest").map_err(engine)?;
        Ok(State { db, latest })
    }

    pub fn latest(&self, origin: &str) -> Result<Option<Latest>, StateError> {
        self.latest
            .get(origin)
            .map_err(engine)?
            .map(|v| Latest::decode(&v))
            .transpose()
    }

    /// Replaces `expected` (None: no record yet) with `new` if the record is still `expected`,
    /// and makes it durable. Returns the current record instead when another request won.
    pub fn advance(
        &self,
        origin: &str,
        expected: Option<&Latest>,
        new: &Latest,
    ) -> Result<Result<(), Option<Latest>>, StateError> {
        let swapped = self
            .latest
            .compare_and_swap(origin, expected.map(Latest::encode), Some(new.encode()))
            .map_err(engine)?;
        match swapped {
            Ok(()) => {
                self.db.flush().map_err(engine)?;
                Ok(Ok(()))
            }
            Err(cas) => Ok(Err(cas.current.map(|v| Latest::decode(&v)).transpose()?)),
        }
    }
}
