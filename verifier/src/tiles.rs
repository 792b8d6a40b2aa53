//! C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): tile paths and entry bundles.
//!
//! A hash tile at level L holds up to 256 hashes of tree level 8·L. Tile N is written in
//! groups of three digits, each but the last prefixed by `x`; a partial tile of width W gets a
//! `.p/W` suffix. There is no height component (Go's sumdb has one; C2SP does not).

use std::fmt;

use crate::merkle::NodeId;

/// Hashes or entries per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u8 = 8;
/// The largest entry an entry bundle can carry.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes at tile level `level` (tree level 8·level).
    Hashes {
        /// The tile level L, holding tree level 8·L.
        level: u8,
    },
    /// An entry bundle.
    Entries,
}

/// One tile: kind, index N and width W (1..=256; 256 is a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TilePath {
    /// Hashes of a level, or entries.
    pub kind: TileKind,
    /// The tile's index N among the tiles of its kind and level.
    pub index: u64,
    /// How many hashes or entries it holds, from 1 to [`TILE_WIDTH`].
    pub width: u16,
}

/// A path that is not a C2SP tile path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad tile path {path:?}: {reason}")]
pub struct TilePathError {
    /// The path asked for, cut to its first 200 characters.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why an entry bundle could not be written or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// An entry too long for the bundle's 16-bit length prefix.
    #[error("entry {index} is {len} bytes, over the {MAX_ENTRY_BYTES}-byte limit")]
    EntryTooLarge {
        /// The entry's 0-based position in the bundle.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// More entries than a tile holds.
    #[error("bundle holds more than {TILE_WIDTH} entries")]
    TooManyEntries,
    /// A bundle with no entry, which no tile is.
    #[error("bundle is empty")]
    Empty,
    /// A length prefix, or the entry it announces, runs past the end of the bundle.
    #[error("bundle is truncated at byte {offset}")]
    Truncated {
        /// The offset in the bundle of the length prefix of the entry cut short.
        offset: usize,
    },
}

impl TilePath {
    /// A full tile.
    pub fn full(kind: TileKind, index: u64) -> Self {
        TilePath {
            kind,
            index,
            width: TILE_WIDTH as u16,
        }
    }

    /// Whether the tile has all [`TILE_WIDTH`] hashes or entries, and so never changes.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
    pub fn parse(path: &str) -> Result<Self, TilePathError> {
        let err = |reason| TilePathError {
            path: path.chars().take(200).collect(),
            reason,
        };
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| err("must start with tile/"))?;
        let (kind_part, rest) = rest
            .split_once('/')
            .ok_or_else(|| err("missing tile index"))?;
        let kind = if kind_part == "entries" {
            TileKind::Entries
        } else {
            let level = crate::checkpoint::parse_canonical_u64(kind_part)
                .filter(|l| *l <= 63)
                .ok_or_else(|| err("level must be a decimal from 0 to 63"))?;
            TileKind::Hashes { level: level as u8 }
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((index_part, w)) => {
                let w = crate::checkpoint::parse_canonical_u64(w)
                    .filter(|w| (1..TILE_WIDTH).contains(w))
                    .ok_or_else(|| err("partial width must be a decimal from 1 to 255"))?;
                (index_part, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let groups: Vec<&str> = index_part.split('/').collect();
        let mut index: u64 = 0;
        for (i, group) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let digits = if last {
                *group
            } else {
                group
                    .strip_prefix('x')
                    .ok_or_else(|| err("index groups but the last need an x prefix"))?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("index groups must be three digits"));
            }
            let value: u64 = digits.parse().map_err(|_| err("bad index digits"))?;
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(value))
                .ok_or_else(|| err("index overflows 64 bits"))?;
        }
        let tile = TilePath { kind, index, width };
        // Leading zero groups ("x000/001") would give two names for one tile.
        if tile.to_string() != path {
            return Err(err("index is not in canonical form"));
        }
        Ok(tile)
    }

    /// The indexes the tile holds at its tree level (entry indexes for a bundle), or `None`
    /// when no tree of at most 2^64 − 1 entries has this tile: a level of 8 or more, or an
    /// index whose entries would be numbered past 2^64. Checked so that a huge index in a
    /// request can never wrap around to a small one.
    pub fn index_range(&self) -> Option<std::ops::Range<u64>> {
        if let TileKind::Hashes { level } = self.kind {
            if u32::from(level) * u32::from(TILE_HEIGHT) >= 64 {
                return None;
            }
        }
        let start = self.index.checked_mul(TILE_WIDTH)?;
        Some(start..start.checked_add(u64::from(self.width))?)
    }

    /// The tree nodes a hash tile holds, in order; `None` for entry bundles and for tiles
    /// beyond any tree (see [`TilePath::index_range`]).
    pub fn nodes(&self) -> Option<Vec<NodeId>> {
        match self.kind {
            TileKind::Hashes { level } => {
                // index_range refuses levels whose nodes would be at level 64 or more.
                let range = self.index_range()?;
                let node_level = level * TILE_HEIGHT;
                Some(range.map(|i| NodeId::new(node_level, i)).collect())
            }
            TileKind::Entries => None,
        }
    }
}

impl fmt::Display for TilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hashes { level } => write!(f, "tile/{level}/")?,
            TileKind::Entries => write!(f, "tile/entries/")?,
        }
        // N in three-digit groups, most significant first; all but the last get an x.
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        for (i, g) in groups.iter().rev().enumerate() {
            if i + 1 < groups.len() {
                write!(f, "x{g:03}/")?;
            } else {
                write!(f, "{g:03}")?;
            }
        }
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

/// Encodes entries as a bundle: each a big-endian uint16 length and the bytes.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, BundleError> {
    if entries.len() as u64 > TILE_WIDTH {
        return Err(BundleError::TooManyEntries);
    }
    let mut out = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| BundleError::EntryTooLarge {
            index,
            len: e.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Decodes a bundle into its entries.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    if bytes.is_empty() {
        return Err(BundleError::Empty);
    }
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        if entries.len() as u64 == TILE_WIDTH {
            return Err(BundleError::TooManyEntries);
        }
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or(BundleError::Truncated { offset })?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(BundleError::Truncated { offset });
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let cases = [
            ("tile/0/000", TileKind::Hashes { level: 0 }, 0, 256),
            ("tile/1/x001/234", TileKind::Hashes { level: 1 }, 1234, 256),
            (
                "tile/entries/x001/x234/067.p/8",
                TileKind::Entries,
                1_234_067,
                8,
            ),
            (
                "tile/63/999.p/255",
                TileKind::Hashes { level: 63 },
                999,
                255,
            ),
        ];
        for (path, kind, index, width) in cases {
            let t = TilePath::parse(path).unwrap();
            assert_eq!(t, TilePath { kind, index, width });
            assert_eq!(t.to_string(), path);
        }
    }

    #[test]
    fn tiles_beyond_any_tree_have_no_range() {
        let tile = |kind, index, width| TilePath { kind, index, width };
        let level = |l| TileKind::Hashes { level: l };
        let last_full = (u64::MAX - 255) / TILE_WIDTH;
        assert_eq!(
            tile(TileKind::Entries, last_full, 255).index_range(),
            Some(last_full * 256..u64::MAX)
        );
        for index in [1 << 56, 1 << 63, u64::MAX, last_full + 1] {
            for kind in [TileKind::Entries, level(0), level(7)] {
                assert_eq!(tile(kind, index, 256).index_range(), None, "{index}");
            }
        }
        // 2^56 × 256 wraps to 0 in 64 bits: it must not name tile 0.
        assert_eq!(tile(level(0), 1 << 56, 1).nodes(), None);
        assert_eq!(tile(level(8), 0, 1).index_range(), None);
        assert_eq!(tile(level(63), 0, 1).nodes(), None);
        assert_eq!(tile(level(7), 0, 2).nodes().unwrap()[1], NodeId::new(56, 1));
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/64/000",
            "tile/00/000",
            "tile/0/000.p/256",
            "tile/0/000.p/0",
            "tile/0/000.p/08",
            "tile/data/000",
            "tile/0/x18446744073709551616/000",
            "tile/entries/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(TilePath::parse(p).is_err(), "{p} parsed");
        }
    }
}
