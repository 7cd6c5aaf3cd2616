//! Per-query scores: registered-domain split (Public Suffix List) and the shape of the
//! subdomain (Shannon entropy, length, labels). Pure functions over a lowercase name; no
//! allocation (entropy uses a stack `[u32; 256]` table, the split returns slices).

/// A query name split into subdomain and registered domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The registrable domain: one label below the public suffix (`example.co.uk`). For a
    /// name that is itself a public suffix or a single label, the whole name.
    pub registered: &'a [u8],
    /// Everything left of the registered domain, without the joining dot (`a.b`); empty
    /// when there is none.
    pub subdomain: &'a [u8],
}

/// Splits `name` (dotted, lowercase, no trailing dot) with the Public Suffix List, as
/// embedded by the `psl` crate. Taking the last two labels would make every
/// `*.co.uk`/`*.com.au` customer one "domain" and hide a tunnel under a shared suffix.
pub fn split(name: &[u8]) -> Split<'_> {
    let registered = psl::domain(name).map_or(name, |d| d.as_bytes());
    let sub_len = name.len().saturating_sub(registered.len());
    let subdomain = name
        .get(..sub_len.saturating_sub(1))
        .filter(|_| sub_len > 0)
        .unwrap_or(&[]);
    Split {
        registered,
        subdomain,
    }
}

/// Shape of one query's subdomain.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Shannon entropy of the subdomain's characters, dots removed, in bits per character.
    pub entropy: f64,
    /// Subdomain length in characters (dots included).
    pub length: usize,
    /// Labels in the subdomain.
    pub labels: usize,
    /// Longest subdomain label.
    pub longest_label: usize,
}

/// Scores a subdomain.
pub fn score(subdomain: &[u8]) -> Score {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    let (mut labels, mut longest, mut cur) = (0usize, 0usize, 0usize);
    for &b in subdomain {
        if b == b'.' {
            longest = longest.max(cur);
            cur = 0;
            continue;
        }
        if cur == 0 {
            labels += 1;
        }
        cur += 1;
        counts[usize::from(b)] += 1;
        n += 1;
    }
    longest = longest.max(cur);
    let entropy = if n == 0 {
        0.0
    } else {
        let n = f64::from(n);
        counts
            .iter()
            .filter(|c| **c > 0)
            .map(|&c| {
                let p = f64::from(c) / n;
                -p * p.log2()
            })
            .sum()
    };
    Score {
        entropy,
        length: subdomain.len(),
        labels,
        longest_label: longest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psl_split_is_not_last_two_labels() {
        let s = split(b"a.b.example.co.uk");
        assert_eq!(s.registered, b"example.co.uk");
        assert_eq!(s.subdomain, b"a.b");
        let s = split(b"www.example.com");
        assert_eq!(
            (s.registered, s.subdomain),
            (&b"example.com"[..], &b"www"[..])
        );
        // Private-section suffixes: each customer of a hosting suffix is its own domain.
        let s = split(b"x.y.foo.github.io");
        assert_eq!(
            (s.registered, s.subdomain),
            (&b"foo.github.io"[..], &b"x.y"[..])
        );
        // Wildcard and exception rules: `*.kawasaki.jp` makes `foo.kawasaki.jp` a suffix,
        // `!city.kawasaki.jp` makes `city.kawasaki.jp` registrable.
        assert_eq!(
            split(b"a.b.foo.kawasaki.jp").registered,
            b"b.foo.kawasaki.jp"
        );
        let s = split(b"deep.sub.city.kawasaki.jp");
        assert_eq!(
            (s.registered, s.subdomain),
            (&b"city.kawasaki.jp"[..], &b"deep.sub"[..])
        );
        // A registered domain alone, a bare suffix and a single label.
        assert_eq!(split(b"example.com").subdomain, b"");
        assert_eq!(split(b"co.uk").registered, b"co.uk");
        assert_eq!(split(b"defender").registered, b"defender");
        // Unknown TLDs fall back to the default rule: the last label is the suffix.
        let s = split(b"0vaaaaaa.pirate.sea");
        assert_eq!(
            (s.registered, s.subdomain),
            (&b"pirate.sea"[..], &b"0vaaaaaa"[..])
        );
    }

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(score(b"").entropy, 0.0);
        assert_eq!(score(b"aaaa").entropy, 0.0);
        assert!((score(b"ab").entropy - 1.0).abs() < 1e-12);
        assert!((score(b"abcd").entropy - 2.0).abs() < 1e-12);
        // 16 distinct characters: 4 bits each; dots do not count.
        assert!((score(b"0123456789.abcdef").entropy - 4.0).abs() < 1e-12);
        let s = score(b"www");
        assert_eq!((s.length, s.labels, s.longest_label), (3, 1, 3));
        let s = score(b"aa.bbbb.c");
        assert_eq!((s.length, s.labels, s.longest_label), (9, 3, 4));
    }
}
