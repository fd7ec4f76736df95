//! Version ordering as the package managers do it, so "newest" means what apt
//! and dnf mean: dpkg's (epoch, upstream, revision with `~` sorting before
//! everything, even the end of the string) and rpm's `rpmvercmp` (alphanumeric
//! segments, `~` before and `^` after the end).

use std::cmp::Ordering;

/// dpkg's character weight: `~` lowest, then end of string, then letters, then the rest.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn dpkg_part(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (dpkg_order(a.get(i).copied()), dpkg_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// A version's (epoch, upstream, revision), split as dpkg does: the epoch before the
/// first `:` (empty when there is none), the revision after the last `-`.
fn dpkg_split(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = v.split_once(':').unwrap_or(("", v));
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    (epoch, upstream, revision)
}

/// The largest epoch dpkg accepts (`INT_MAX`, lib/dpkg/parsehelp.c).
pub const MAX_DPKG_EPOCH: u64 = i32::MAX as u64;

/// Check a Debian version as dpkg's `parseversion` does, with policy 5.6.12's
/// characters: `[epoch:]upstream[-revision]`, the epoch decimal and at most
/// [`MAX_DPKG_EPOCH`], something after the colon, the upstream part starting with a
/// digit and using only letters, digits and `. + ~ -`, the revision (after the last
/// `-`) non-empty with only letters, digits and `. + ~`. Errors say why.
pub fn check_dpkg_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("the version is empty");
    }
    if version.contains(char::is_whitespace) {
        return Err("a version has no spaces");
    }
    let rest = match version.split_once(':') {
        Some((epoch, rest)) => {
            if epoch.is_empty() {
                return Err("the epoch before ':' is empty");
            }
            if !epoch.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the epoch before ':' must be a decimal number");
            }
            // Digits only, so a failed parse means too many of them.
            if epoch.parse::<u64>().map_or(true, |e| e > MAX_DPKG_EPOCH) {
                return Err("the epoch is larger than dpkg's limit 2147483647");
            }
            if rest.is_empty() {
                return Err("nothing after the epoch's ':'");
            }
            rest
        }
        None => version,
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((upstream, revision)) => (upstream, Some(revision)),
        None => (rest, None),
    };
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("the upstream version must start with a digit");
    }
    if !upstream
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".+~-".contains(&b))
    {
        return Err("the upstream version uses only letters, digits and . + ~ -");
    }
    if let Some(revision) = revision
        && (revision.is_empty()
            || !revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b)))
    {
        return Err("the Debian revision after the last '-' uses only letters, digits and . + ~");
    }
    Ok(())
}

/// Compare two Debian versions (`[epoch:]upstream[-revision]`). Versions are checked
/// with [`check_dpkg_version`] when a package is inspected; the epochs are compared
/// as numbers of any length, so even a version stored before that check never has its
/// epoch read as 0.
pub fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = dpkg_split(a);
    let (eb, ub, rb) = dpkg_split(b);
    dpkg_part(ea.as_bytes(), eb.as_bytes())
        .then_with(|| dpkg_part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| dpkg_part(ra.as_bytes(), rb.as_bytes()))
}

/// rpm's `rpmvercmp` for one of version or release.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && separator(a[i]) {
            i += 1;
        }
        while j < b.len() && separator(b[j]) {
            j += 1;
        }
        // Tilde sorts before everything, even the end of the string.
        match (a.get(i) == Some(&b'~'), b.get(j) == Some(&b'~')) {
            (true, true) => {
                i += 1;
                j += 1;
                continue;
            }
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        // Caret sorts after the end of the string but before anything else.
        match (a.get(i) == Some(&b'^'), b.get(j) == Some(&b'^')) {
            (true, true) => {
                i += 1;
                j += 1;
                continue;
            }
            (true, false) => {
                return if j >= b.len() {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            (false, true) => {
                return if i >= a.len() {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
            }
            _ => {}
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let take = |s: &[u8], mut k: usize| {
            let start = k;
            while k < s.len()
                && if numeric {
                    s[k].is_ascii_digit()
                } else {
                    s[k].is_ascii_alphabetic()
                }
            {
                k += 1;
            }
            (start, k)
        };
        let (sa, ea) = take(a, i);
        let (sb, eb) = take(b, j);
        if sb == eb {
            // One segment is numeric, the other alphabetic: numeric is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut seg_a, mut seg_b) = (&a[sa..ea], &b[sb..eb]);
        if numeric {
            while seg_a.first() == Some(&b'0') {
                seg_a = &seg_a[1..];
            }
            while seg_b.first() == Some(&b'0') {
                seg_b = &seg_b[1..];
            }
            let by_length = seg_a.len().cmp(&seg_b.len());
            if by_length != Ordering::Equal {
                return by_length;
            }
        }
        let by_text = seg_a.cmp(seg_b);
        if by_text != Ordering::Equal {
            return by_text;
        }
        i = ea;
        j = eb;
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// Compare RPM (epoch, version, release).
pub fn rpm_cmp(a: (u32, &str, &str), b: (u32, &str, &str)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| rpmvercmp(a.1, b.1))
        .then_with(|| rpmvercmp(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_orders_like_dpkg() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+b1", Less),
            ("2.10-3", "2.10-3+b1", Less),
            ("1:1.0", "2.0", Greater),
            ("1.0-1", "1.0-2", Less),
            ("1.0a", "1.0", Greater),
            ("1.002", "1.2", Equal),
            ("1.10", "1.9", Greater),
            ("1.0-1~bpo12+1", "1.0-1", Less),
            ("0:1.0", "1.0", Equal),
            ("10:1.0", "9:2.0", Greater),
            ("007:1.0", "7:1.0", Equal),
            ("2147483647:1", "2147483646:9", Greater),
            // Before the fix an epoch too long for u64 parsed as 0 and sorted below 1:2.
            ("99999999999999999999:1", "1:2", Greater),
            ("99999999999999999999:1", "99999999999999999998:1", Greater),
        ] {
            assert_eq!(dpkg_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(dpkg_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn dpkg_versions_are_checked_like_parseversion() {
        for good in [
            "1.0",
            "1:2.10-3",
            "2.10-3+deb12u1",
            "1.0~rc1-1",
            "0-1-2",
            "7",
            "0:1",
            "2147483647:1.0",
            "01:1.0",
        ] {
            assert_eq!(check_dpkg_version(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("1.0 1", "spaces"),
            (":1", "epoch before ':' is empty"),
            ("x:1.0", "decimal"),
            ("-1:1.0", "decimal"),
            ("+1:1.0", "decimal"),
            ("2147483648:1.0", "larger than"),
            ("99999999999999999999:1", "larger than"),
            ("1:", "nothing after"),
            ("1:-1", "start with a digit"),
            ("a1.0", "start with a digit"),
            ("1:a", "start with a digit"),
            ("1.0_1", "upstream"),
            ("1:2:3", "upstream"),
            ("1.0-", "revision"),
            ("1.0-a_b", "revision"),
        ] {
            let err = check_dpkg_version(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn rpm_orders_like_rpmvercmp() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0a", "1.0", Greater),
            ("1.010", "1.9", Greater),
            ("1.0.0", "1.0", Greater),
            ("fc4", "fc.4", Equal),
            ("1a", "1.1", Less),
        ] {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(rpm_cmp((2, "1.0", "1"), (0, "9.9", "9")), Greater);
        assert_eq!(rpm_cmp((0, "1.0", "2"), (0, "1.0", "10")), Less);
    }
}
