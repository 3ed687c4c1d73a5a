//! Kafka's default partitioner for keyed records, bit for bit the Java client's:
//! `Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions`.

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, as a Java `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    // Java's switch falls through from 3 to 2 to 1 (bytes are sign-extended then masked: same bits).
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition the Java client's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let n = partitions.max(1) as u32;
    (to_positive(murmur2(key)) % n) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Apache Kafka's `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java`
    /// (`testMurmur2`).
    #[test]
    fn java_murmur2_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            // new byte[] {'a', 'b', 'c'}
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key),
                *want,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_follow_to_positive_modulo() {
        // toPositive(-973932308) = 1173551340; toPositive(479470107) = 479470107.
        assert_eq!(to_positive(-973932308), 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 4), (1_173_551_340u32 % 4) as i32);
        assert_eq!(partition_for_key(b"abc", 7), (479_470_107u32 % 7) as i32);
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        // toPositive is not abs(): i32::MIN maps to 0.
        assert_eq!(to_positive(i32::MIN), 0);
        for p in 1..50 {
            assert!((0..p).contains(&partition_for_key(b"plant/line1/temp", p)));
        }
    }

    #[test]
    fn empty_key_hashes() {
        // Java: murmur2(new byte[0]) == 275646681.
        assert_eq!(murmur2(b""), 275646681);
    }
}
