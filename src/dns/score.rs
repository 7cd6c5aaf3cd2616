//! Per-name scores: the registered-domain split (Public Suffix List), and what the subdomain
//! is made of — its encoding (hex, base32, base64/base64url, raw 8-bit bytes), the
//! regularity of its label lengths, its Shannon entropy and its length — as a number with
//! named components, so an alert can say why a name looked like tunnel data.
//!
//! Why encoding and not only entropy: a tunnel carries bytes, and DNS only lets it carry
//! them as label characters, so it must encode them. Hex never exceeds 4 bits per character
//! and base32 5, so a dnscat2 handshake (34 hex characters a label) has *less* entropy than
//! an ordinary long name like `upload.wikimedia.org.ncsa` (3.8 bits): entropy alone cannot
//! separate them. The alphabet and the way letters and digits alternate can.
//!
//! Pure functions over a name; no allocation (entropy uses a stack `[u32; 256]` table, the
//! splits return slices).

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

/// Whether `name` is `suffix` or ends with `.suffix` (label boundary).
pub fn under(name: &[u8], suffix: &[u8]) -> bool {
    !suffix.is_empty()
        && (name == suffix
            || (name.len() > suffix.len()
                && name.ends_with(suffix)
                && name.get(name.len() - suffix.len() - 1) == Some(&b'.')))
}

/// A search-list retry found inside a subdomain: the registrable name a resolver's search
/// list was appended to (`wikimedia.org` in `upload.wikimedia.org.ncsa.uiuc.edu`), and that
/// name's own subdomain (`upload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded<'a> {
    /// The embedded registrable name.
    pub registered: &'a [u8],
    /// Its subdomain, scored in place of the whole one (empty when none).
    pub subdomain: &'a [u8],
}

/// Finds a full registrable name at the front of `subdomain`: the longest run of its leading
/// labels that ends in a *known* public suffix (ICANN or private section, not the PSL's
/// default `*` rule, which any label would match) with a registrable label before it.
///
/// The rule, and why: stub resolvers append search domains to names with fewer dots than
/// `ndots` (glibc: after trying the name itself when it has at least `ndots` dots; with
/// Kubernetes' ndots:5, *before* it). So `upload.wikimedia.org` becomes
/// `upload.wikimedia.org.ncsa.uiuc.edu`, and the "subdomain" under `uiuc.edu` is a whole
/// registrable name. A rule "the same client resolved `<name>` moments before" misses every
/// retry sent before the real name, so the structural rule is used. A tunnel could append a
/// suffix-looking label to its data (`<hex>.x.com.evil.net`): the caller therefore scores
/// the embedded name's own subdomain (`<hex>`) instead of ignoring the name, and the
/// registrable label must itself look like a name (no encoding), so data cannot hide here.
pub fn embedded_name(subdomain: &[u8]) -> Option<Embedded<'_>> {
    if !subdomain.contains(&b'.') {
        return None;
    }
    // Prefixes ending at each label boundary, longest first: the whole subdomain, then
    // without its last label, ... down to two labels. At most 127 labels fit in a name.
    let mut end = subdomain.len();
    loop {
        let prefix = subdomain.get(..end)?;
        if let Some(d) = psl::domain(prefix) {
            let reg = d.as_bytes();
            let label = reg.split(|b| *b == b'.').next().unwrap_or(&[]);
            if d.suffix().is_known()
                && label.len() <= MAX_NAME_LABEL
                && classify(label, false).0 == Encoding::None
                && !label.iter().any(|b| !b.is_ascii_graphic())
            {
                let sub_len = prefix.len().saturating_sub(reg.len());
                let sub = if sub_len > 0 {
                    prefix.get(..sub_len - 1).unwrap_or(&[])
                } else {
                    &[]
                };
                return Some(Embedded {
                    registered: reg,
                    subdomain: sub,
                });
            }
        }
        end = prefix.iter().rposition(|b| *b == b'.')?;
    }
}

/// The registrable label of an embedded search-retry name is at most this long: real
/// second-level names are short (the longest in the top million is under 40); a data label
/// is usually longer.
const MAX_NAME_LABEL: usize = 40;

/// How the data labels of a subdomain are encoded.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Encoding {
    /// No encoding recognised: ordinary labels, or too little data to tell.
    #[default]
    None = 0,
    /// `0-9a-f` (one case), letters and digits alternating like random data (dnscat2).
    Hex = 1,
    /// One case of letters and digits, not hex, alternating like random data: RFC 4648
    /// base32 (`a-z2-7`), iodine's (`a-z0-5`), base36.
    Base32 = 2,
    /// Both letter cases with digits or `+/=_-`: base64 and base64url (dns2tcp).
    Base64 = 3,
    /// Bytes outside printable ASCII: raw 8-bit labels (iodine's raw and base128
    /// encodings). No hostname carries them (IDNs travel as `xn--` punycode).
    Binary = 4,
}

/// Number of [`Encoding`] values.
pub const ENCODINGS: usize = 5;

impl Encoding {
    /// Every encoding, in discriminant order.
    pub const ALL: [Encoding; ENCODINGS] = [
        Encoding::None,
        Encoding::Hex,
        Encoding::Base32,
        Encoding::Base64,
        Encoding::Binary,
    ];

    /// Lowercase name, as alerts write it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::None => "none",
            Encoding::Hex => "hex",
            Encoding::Base32 => "base32",
            Encoding::Base64 => "base64",
            Encoding::Binary => "binary",
        }
    }

    /// Points a name gets for carrying a full [`FULL_DATA`] characters in this encoding.
    /// Raw bytes are never a hostname; mixed-case base64 with digits almost never is;
    /// hex and base32 runs do occur in benign names (build ids, hashes in CDN names).
    pub fn weight(self) -> f64 {
        match self {
            Encoding::None => 0.0,
            Encoding::Hex | Encoding::Base32 => 2.0,
            Encoding::Base64 => 2.5,
            Encoding::Binary => 3.0,
        }
    }

    fn from_u8(v: u8) -> Encoding {
        Encoding::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or_default()
    }
}

impl From<u8> for Encoding {
    fn from(v: u8) -> Encoding {
        Encoding::from_u8(v)
    }
}

/// A label shorter than this is not taken as data: tunnels' fixed zone labels (`t1`, `srv`,
/// `dns2tcp`) and the short labels of ordinary hosts (`www`, `mail2`, `eu-west-1`). Tunnels
/// fill labels to use the 255-byte name, so their data labels are long.
pub const MIN_DATA_LABEL: usize = 8;
/// Data characters needed before an encoding is named (binary excepted): below this,
/// letter-digit mixes are common in ordinary names (`host12b4`), and a tunnel moving data
/// 15 characters a query would be slower than the rate detector's threshold matters.
pub const MIN_ENCODED: usize = 16;
/// Data characters at which the encoding component reaches its full weight: shorter
/// encoded runs earn a proportional share (a 16-character run half).
pub const FULL_DATA: usize = 32;
/// Leading data labels of this length or more, all the same length, are "regular": a
/// tunnel cuts its data into labels of one fixed size (dns2tcp and iodine 63, 63, ...).
pub const REGULAR_LABEL: usize = 16;

/// Tunables of the score, from `[dns]` (see `config::DnsConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Bits per character above which entropy adds a point per bit (at most 1).
    pub entropy_from: f64,
    /// Characters above which length adds a point per 40 characters (at most 1.5).
    pub length_from: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            entropy_from: 3.5,
            length_from: 40,
        }
    }
}

/// The named parts of a name's score; their sum is the score.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Components {
    /// [`Encoding::weight`] times the share of [`FULL_DATA`] the data characters fill.
    pub encoding: f64,
    /// 1 point per bit of entropy above `Params::entropy_from`, at most 1.
    pub entropy: f64,
    /// 1 point per 40 characters above `Params::length_from`, at most 1.5.
    pub length: f64,
    /// 1 point when the leading data labels are cut at one length (≥ [`REGULAR_LABEL`]).
    pub regularity: f64,
}

impl Components {
    /// The score: the sum of the components.
    pub fn total(&self) -> f64 {
        self.encoding + self.entropy + self.length + self.regularity
    }
}

/// What a subdomain is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    /// Shannon entropy of the subdomain's characters, dots removed, in bits per character.
    pub entropy: f64,
    /// Subdomain length in characters (dots included).
    pub length: usize,
    /// Labels in the subdomain.
    pub labels: usize,
    /// Longest subdomain label.
    pub longest_label: usize,
    /// The encoding of the data labels (labels of at least [`MIN_DATA_LABEL`] characters).
    pub encoding: Encoding,
    /// Characters in the data labels.
    pub data_chars: usize,
    /// The leading data labels have one length of at least [`REGULAR_LABEL`].
    pub regular: bool,
    /// The score's parts.
    pub components: Components,
    /// The score: `components.total()`.
    pub total: f64,
}

/// What one pass over the data labels counted.
#[derive(Default)]
struct Chars {
    n: usize,
    digits: usize,
    lower: usize,
    upper: usize,
    /// `a-f`/`A-F`.
    hex_letters: usize,
    /// `-` and `_` (base64url, and ordinary names).
    dash: usize,
    /// `+`, `/`, `=` (standard base64).
    b64_sym: usize,
    /// Bytes outside printable ASCII, and `\`.
    binary: usize,
    /// Printable ASCII that no encoding uses.
    other: usize,
    /// Adjacent letter/digit changes within a label: random data alternates often
    /// (hex about every other character, base32 about every third); words and host
    /// numbering (`web12`) rarely.
    letter_digit: usize,
}

fn count(data_labels: impl Iterator<Item = u8>, c: &mut Chars, prev: &mut u8) {
    for b in data_labels {
        c.n += 1;
        let kind = match b {
            b'0'..=b'9' => {
                c.digits += 1;
                1
            }
            b'a'..=b'z' => {
                c.lower += 1;
                if b <= b'f' {
                    c.hex_letters += 1;
                }
                2
            }
            b'A'..=b'Z' => {
                c.upper += 1;
                if b <= b'F' {
                    c.hex_letters += 1;
                }
                2
            }
            b'-' | b'_' => {
                c.dash += 1;
                0
            }
            b'+' | b'/' | b'=' => {
                c.b64_sym += 1;
                0
            }
            b'\\' | 0..=0x20 | 0x7f..=0xff => {
                c.binary += 1;
                0
            }
            _ => {
                c.other += 1;
                0
            }
        };
        if kind != 0 && *prev != 0 && kind != *prev {
            c.letter_digit += 1;
        }
        *prev = kind;
    }
}

/// Classifies the characters of data labels `data` (dots allowed: each label is counted
/// on its own). `ignore_case`: the case of the name says nothing (DNS 0x20 randomisation:
/// a resolver flips letter case at random to harden against spoofing, so mixed case is
/// not base64). Returns the encoding and the data characters.
fn classify(data: &[u8], ignore_case: bool) -> (Encoding, usize) {
    let mut c = Chars::default();
    for label in data.split(|b| *b == b'.') {
        let mut prev = 0u8;
        count(label.iter().copied(), &mut c, &mut prev);
    }
    (encoding_of(&c, ignore_case), c.n)
}

fn encoding_of(c: &Chars, ignore_case: bool) -> Encoding {
    if c.binary > 0 && c.n >= MIN_DATA_LABEL {
        return Encoding::Binary;
    }
    if c.n < MIN_ENCODED || c.other > 0 || c.binary > 0 {
        return Encoding::None;
    }
    let letters = c.lower + c.upper;
    let mixed_case = !ignore_case && c.lower > 0 && c.upper > 0;
    if mixed_case {
        // Base64: both cases, and digits or base64's own symbols (0x20-randomised words
        // have neither; random base64 has a digit every 6.4 characters). A resolver's 0x20
        // randomisation of a name with digits is caught by the caller from the registered
        // domain's case ([`case_randomised`]).
        let ok = c.digits > 0 || c.b64_sym > 0;
        return if ok { Encoding::Base64 } else { Encoding::None };
    }
    if c.dash > 0 || c.b64_sym > 0 || c.digits == 0 || letters == 0 {
        return Encoding::None;
    }
    let alternating = |per: usize, min: usize| c.letter_digit >= (c.n / per).max(min);
    if c.hex_letters == letters && alternating(8, 2) {
        Encoding::Hex
    } else if alternating(10, 3) {
        Encoding::Base32
    } else {
        Encoding::None
    }
}

/// Shannon entropy of `s`'s bytes, dots removed, in bits per character.
fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for &b in s {
        if b != b'.' {
            counts[usize::from(b)] += 1;
            n += 1;
        }
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    let h: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    h.abs() // one distinct character sums to -0.0, which JSON would print as `-0.0`
}

/// Scores a subdomain. `subdomain` is lowercase (as matched); `original` is the same bytes
/// with the case they had on the wire (or the lowercase ones when unknown), used to tell
/// base64 by its two cases; `case_random`: the name's case was randomised (DNS 0x20), so
/// case is ignored.
pub fn score_with(subdomain: &[u8], original: &[u8], case_random: bool, p: &Params) -> Score {
    let original = if original.len() == subdomain.len() {
        original
    } else {
        subdomain
    };
    let (mut labels, mut longest) = (0usize, 0usize);
    let mut c = Chars::default();
    // Lengths of the leading data labels, for regularity: the first length and how many
    // consecutive data labels from the first one share it.
    let (mut first_len, mut same, mut run_open) = (0usize, 0usize, true);
    for label in original.split(|b| *b == b'.') {
        if label.is_empty() {
            continue;
        }
        labels += 1;
        longest = longest.max(label.len());
        if label.len() >= MIN_DATA_LABEL {
            let mut prev = 0u8;
            count(label.iter().copied(), &mut c, &mut prev);
            if run_open {
                if first_len == 0 {
                    first_len = label.len();
                    same = 1;
                } else if label.len() == first_len {
                    same += 1;
                } else {
                    run_open = false;
                }
            }
        }
    }
    let encoding = encoding_of(&c, case_random);
    let h = entropy(subdomain);
    let regular = same >= 2 && first_len >= REGULAR_LABEL;
    let share = (c.n as f64 / FULL_DATA as f64).min(1.0);
    let components = Components {
        encoding: encoding.weight() * share,
        entropy: (h - p.entropy_from).clamp(0.0, 1.0),
        length: ((subdomain.len() as f64 - p.length_from as f64) / 40.0).clamp(0.0, 1.5),
        regularity: if regular { 1.0 } else { 0.0 },
    };
    Score {
        entropy: h,
        length: subdomain.len(),
        labels,
        longest_label: longest,
        encoding,
        data_chars: c.n,
        regular,
        total: components.total(),
        components,
    }
}

/// Scores a lowercase subdomain with the default parameters and no case information.
pub fn score(subdomain: &[u8]) -> Score {
    score_with(subdomain, subdomain, false, &Params::default())
}

/// Whether a name's case looks randomised (DNS 0x20): its registered domain — which a
/// tunnel's client never varies — has both upper- and lowercase letters.
pub fn case_randomised(original_registered: &[u8]) -> bool {
    original_registered.iter().any(u8::is_ascii_uppercase)
        && original_registered.iter().any(u8::is_ascii_lowercase)
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

    fn enc(sub: &str) -> Encoding {
        score_with(
            sub.to_ascii_lowercase().as_bytes(),
            sub.as_bytes(),
            false,
            &Params::default(),
        )
        .encoding
    }

    #[test]
    fn encodings_are_told_apart() {
        // dnscat2's handshake: 34 hex characters, one label.
        assert_eq!(enc("6a8b0147c5e9a0d2003f1be86a51c07d42"), Encoding::Hex);
        // iodine's base32 (a-z0-5), from elastic_dns-tunnel-iodine.pcap.
        assert_eq!(enc("laegpumiplhhpz12ynd1efljwlkjcgwy"), Encoding::Base32);
        // RFC 4648 base32 of random bytes.
        assert_eq!(
            enc("mzxw6ytboi4dqmrsgq3tkmzwgi2dmnbvgezdgnbvgu"),
            Encoding::Base32
        );
        // dns2tcp's base64, from dmachard_dns2tcp.pcap: three 63/63/50 labels and the zone.
        let d = "oncAAAAFCAAABdwEFMr01YCc+blUlhWmPH7L/5cAAAEUY3VydmUyNTUxOS1zaGE.\
                 yNTYsY3VydmUyNTUxOS1zaGEyNTZAbGlic3NoLm9yZyxlY2RoLXNoYTItbmlzdH.\
                 AyNTYsZWNkaC1zaGEyLW5pc3RwMzg0LGVjZGgtc2hhMi1uaXN0.dns2tcp";
        assert_eq!(enc(d), Encoding::Base64);
        let s = score_with(
            d.to_ascii_lowercase().as_bytes(),
            d.as_bytes(),
            false,
            &Params::default(),
        );
        assert!(s.regular, "63/63/50");
        assert_eq!(
            s.components,
            Components {
                encoding: 2.5,
                entropy: s.components.entropy,
                length: 1.5,
                regularity: 1.0
            }
        );
        assert!(s.components.entropy > 0.9, "{s:?}");
        // base64url of random bytes (`-` and `_`).
        assert_eq!(enc("q2V4-Zr9_x7PwLmK3sT0uVb"), Encoding::Base64);
        // iodine's raw 8-bit labels.
        assert_eq!(enc("rdead\u{c6}\u{ea}trv\u{c8}cy"), Encoding::Binary);
        let raw = score_with(
            b"rdead\xc6\xea\xd4rv\xc8",
            b"rdead\xc6\xea\xd4rv\xc8",
            false,
            &Params::default(),
        );
        assert_eq!(raw.encoding, Encoding::Binary);
    }

    /// Random data in each encoding is named for what it is, nearly always: 2000 strings
    /// each of 32 (hex) and 40 (base32, base64) characters, the sizes of dnscat2's and
    /// the generated tunnels' labels. What is missed is the rare draw without a digit.
    #[test]
    fn random_data_is_classified_by_its_encoding() {
        let mut rng = crate::gen::Rng::new(14);
        let hex = b"0123456789abcdef";
        let b32 = b"abcdefghijklmnopqrstuvwxyz234567";
        let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for (alphabet, len, want, min_rate) in [
            (&hex[..], 32, Encoding::Hex, 0.999),
            (&b32[..], 40, Encoding::Base32, 0.99),
            (&b64[..], 40, Encoding::Base64, 0.99),
        ] {
            let n = 2000;
            let mut hits = 0;
            for _ in 0..n {
                let s: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect();
                let lower = s.to_ascii_lowercase();
                if score_with(&lower, &s, false, &Params::default()).encoding == want {
                    hits += 1;
                }
            }
            let rate = f64::from(hits) / f64::from(n);
            assert!(rate >= min_rate, "{want:?}: {rate}");
        }
    }

    #[test]
    fn ordinary_names_have_no_encoding() {
        for n in [
            "www",
            "upload.wikimedia.org.ncsa",
            "api.github.com.default.svc",
            "r3---sn-4g5e6nsz",
            "ec2-54-123-45-67.compute-1",
            "windowsupdate",
            "safebrowsing-cache",
            "host12.updates",
            "clients6",
            "_ldap._tcp.dc._msdcs",
            "xn--bcher-kva",
            "deadbeefcafe", // hex but short
            "fbcdn-profile-a",
            "mail2017server",
            "r4---sn-ab5l6nzr",
            "1-courier.push",
            "s1024-2013-q3._domainkey",
            "outlook.office365",
            "safebrowsing.googleapis",
            "dualstack.apiservices-1234567890.us-east-1.elb",
            // 0x20-randomised case is not base64 (no digits)...
            "UpLoAd.WiKiMeDiA",
        ] {
            assert_eq!(enc(n), Encoding::None, "{n}");
        }
        // ...and when the case is known to be random, it is ignored.
        let s = score_with(
            b"ec2-54-123-45-67.compute-1",
            b"Ec2-54-123-45-67.CoMpUtE-1",
            true,
            &Params::default(),
        );
        assert_eq!(s.encoding, Encoding::None);
    }

    #[test]
    fn the_issue_names_score_low() {
        // Issue 14: 3.8 bits of entropy from an ordinary name.
        let s = score(b"upload.wikimedia.org.ncsa");
        assert!(s.entropy > 3.7);
        assert!(s.total < 1.0, "{s:?}");
        // A dnscat2 handshake label: low entropy, yet encoded.
        let s = score(b"6a8b0147c5e9a0d2003f1be86a51c07d42");
        assert!(s.entropy < 4.0);
        assert!(s.total >= 2.0, "{s:?}");
    }

    #[test]
    fn search_retries_are_found_structurally() {
        let e = embedded_name(b"upload.wikimedia.org.ncsa").unwrap();
        assert_eq!(
            (e.registered, e.subdomain),
            (&b"wikimedia.org"[..], &b"upload"[..])
        );
        let e = embedded_name(b"api.github.com.default").unwrap();
        assert_eq!(e.registered, b"github.com");
        let e = embedded_name(b"www.bbc.co.uk.corp").unwrap();
        assert_eq!(
            (e.registered, e.subdomain),
            (&b"bbc.co.uk"[..], &b"www"[..])
        );
        let e = embedded_name(b"example.com").unwrap();
        assert_eq!((e.registered, e.subdomain), (&b"example.com"[..], &b""[..]));
        // Not retries: one label, unknown suffixes, data labels.
        assert_eq!(embedded_name(b"www"), None);
        assert_eq!(embedded_name(b"a.b.c"), None);
        assert_eq!(embedded_name(b"oncaaaabba.dns2tcp"), None);
        assert_eq!(
            embedded_name(b"6a8b0147c5e9a0d2003f1be86a51c07d42.dnscat"),
            None
        );
        // A data label cannot pose as the registrable name.
        assert_eq!(
            embedded_name(b"6a8b0147c5e9a0d2003f1be86a51c07d42.com"),
            None
        );
        // Data in front of a fake registrable name stays visible to the caller.
        let e = embedded_name(b"6a8b0147c5e9a0d2003f1be86a51c07d42.x.com").unwrap();
        assert_eq!(e.subdomain, b"6a8b0147c5e9a0d2003f1be86a51c07d42");
    }

    #[test]
    fn regular_labels() {
        let a = "a".repeat(20);
        let regular = format!("{a}.{a}.abc");
        assert!(score(regular.as_bytes()).regular);
        let irregular = format!("{a}.{}", "b".repeat(30));
        assert!(!score(irregular.as_bytes()).regular);
        assert!(!score(a.as_bytes()).regular, "one label");
        assert!(!score(b"abcdefghij.abcdefghij").regular, "too short");
    }

    #[test]
    fn case_randomisation_is_seen_in_the_registered_domain() {
        assert!(case_randomised(b"ExAmple.com"));
        assert!(!case_randomised(b"example.com"));
        assert!(!case_randomised(b"EXAMPLE.COM"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile bytes: any subdomain, any case bytes, never a panic, and the total is
        /// the sum of the components and finite.
        #[test]
        fn any_bytes_score_without_panic(sub in proptest::collection::vec(any::<u8>(), 0..300),
                                         orig in proptest::collection::vec(any::<u8>(), 0..300),
                                         case in any::<bool>()) {
            let s = score_with(&sub, &orig, case, &Params::default());
            prop_assert!(s.total.is_finite());
            prop_assert!((s.total - s.components.total()).abs() < 1e-9);
            prop_assert!(s.total >= 0.0 && s.total <= 3.0 + 1.0 + 1.5 + 1.0);
            let _ = embedded_name(&sub);
            let _ = split(&sub);
        }
    }
}
