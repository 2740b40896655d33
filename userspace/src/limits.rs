//! Limits that both config validation and the running parts enforce, in one place so the two
//! can never disagree (a weight the config accepts is one a runtime command accepts too).

/// Highest L4 backend weight: Maglev gives each backend a share of the table in proportion.
pub const L4_MAX_WEIGHT: u32 = 65535;

/// Highest L7 server weight: the round-robin order has one entry per unit of weight, so it
/// stays small.
pub const L7_MAX_WEIGHT: u32 = 256;

/// Whether `n` is prime: a Maglev table's size must be, so every backend's permutation
/// visits every slot.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}
