//! Which broker shard owns a topic: FNV-1a over the channel name, then Lamping and Veach's jump
//! consistent hash. Every node computes the same shard for a topic from its bytes alone, and
//! adding a shard at the end of the list moves only about 1/N of the topics.

/// FNV-1a, 64 bits: stable across processes, versions and machines (std's hashers are not
/// promised to be).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Jump consistent hash ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014): a bucket
/// in `0..buckets` for `key`.
pub fn jump(mut key: u64, buckets: usize) -> usize {
    assert!(buckets >= 1);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The shard of `topic` among `shards`.
pub fn shard_of(topic: &str, shards: usize) -> usize {
    if shards == 1 {
        return 0;
    }
    jump(fnv1a(topic.as_bytes()), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_spreads_evenly_and_moves_little_when_a_shard_is_added() {
        let n = 20_000;
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for i in 0..n {
            let t = format!("topic-{i}");
            let s3 = shard_of(&t, 3);
            counts[s3] += 1;
            let s4 = shard_of(&t, 4);
            if s4 != s3 {
                assert_eq!(s4, 3, "a topic only moves to the new shard");
                moved += 1;
            }
            assert_eq!(shard_of(&t, 1), 0);
        }
        for c in counts {
            assert!(
                (c as f64 - n as f64 / 3.0).abs() < n as f64 * 0.03,
                "{counts:?}"
            );
        }
        // About a quarter moves to the fourth shard.
        assert!(
            (moved as f64 - n as f64 / 4.0).abs() < n as f64 * 0.03,
            "{moved}"
        );
    }
}
