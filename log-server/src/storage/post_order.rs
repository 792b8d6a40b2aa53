//! Where each tree node lives in the node file.
//!
//! Nodes are stored in the order an append-only tree completes them: appending leaf `j`
//! completes the leaf and then every parent it closes, lowest level first. This is the
//! post-order layout of Merkle Mountain Ranges (as in Grin's MMR storage): every batch of
//! appends writes one contiguous run at the end of the file, and a node's position follows
//! from its name alone.

use reprolog_verifier::merkle::NodeId;

/// How many nodes a tree of `size` leaves has completed: Σ⌊size / 2^level⌋.
pub fn node_count(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// The position of a complete node in the node file.
///
/// Node (level, index) is completed by the append of leaf `j = (index + 1)·2^level − 1`,
/// which writes levels `0..=level` in order after the nodes of leaves `0..j`.
pub fn position(node: NodeId) -> u64 {
    let last_leaf = ((node.index + 1) << node.level) - 1;
    node_count(last_leaf) + u64::from(node.level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_order_in_which_appends_complete_nodes() {
        let mut next = 0;
        for leaf in 0u64..5000 {
            assert_eq!(node_count(leaf), next, "nodes before leaf {leaf}");
            let (mut level, mut index) = (0u8, leaf);
            loop {
                assert_eq!(position(NodeId::new(level, index)), next);
                next += 1;
                if index & 1 == 0 {
                    break;
                }
                level += 1;
                index >>= 1;
            }
        }
        assert_eq!(node_count(5000), next);
    }

    #[test]
    fn large_trees_fit() {
        let size = 1u64 << 40;
        assert_eq!(node_count(size), (1 << 41) - 1);
        assert_eq!(position(NodeId::new(40, 0)), node_count(size) - 1);
    }
}
