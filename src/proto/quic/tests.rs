//! Unit tests: the RFC 9001 and RFC 9369 sample client Initials, header walks of known and
//! impossible bytes, the assembler's orders, and properties over arbitrary bytes.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The sample connection's Destination Connection ID (RFC 9001 §A, RFC 9369 §A).
const DCID: &str = "8394c8f03e515708";

/// The CRYPTO frame of the sample client Initial, both versions (RFC 9001 §A.2, RFC 9369
/// §A.2): offset 0, 241 bytes, a ClientHello for example.com with ALPN "alpn". The packet's
/// plaintext is this frame followed by PADDING up to 1162 bytes.
const CRYPTO_FRAME: &str = "\
060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e86804fe3a47f06a2b69484c000004
13011302010000c000000010000e00000b6578616d706c652e636f6dff01000100000a00080006001d00170018
00100007000504616c706e000500050100000000003300260024001d00209370b2c9caa47fbabaf4559fedba753d
e171fa71f50f1ce15d43e994ec74d748002b0003020304000d0010000e0403050306030203080408050806002d00
020101001c00024001003900320408ffffffffffffffff05048000ffff07048000ffff0801100104800075300901
100f088394c8f03e51570806048000ffff";

/// RFC 9001 §A.2: the protected client Initial (1200 bytes, packet number 2).
const V1_PACKET: &str = "\
c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9bd8bab936b47d92ec
356c0bab7df5976d27cd449f63300099f3991c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cad
b8e7378c8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df621230c83711b39343fa028c
ea7f7fb5ff89eac2308249a02252155e2347b63d58c5457afd84d05dfffdb20392844ae812154682e9cf012f9021
a6f0be17ddd0c2084dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec4e15daf8500a
6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3d
d60bc8e30c5c4287e53805db059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c7b43
78e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f89937f5a67258bf63ad6f1a0b1d96dbd4
faddfcefc5266ba6611722395c906556be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d5411
9c7468449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663ac69890f4157015853d91e923
037c227a33cdd5ec281ca3f79c44546b9d90ca00f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b
9c5927726632291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe5896425c5bac4aee82e57
a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd14de71e6c418559302f939b0e1abd576f279c4b2e0fe
b85c1f28ff18f58891ffef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198e3fc433f
9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009ddc324044e847a4f4a0ab34f719595de37252d
6235365e9b84392b061085349d73203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450efc60ac47683d7b8d0f811365565f
d98c4c8eb936bcab8d069fc33bd801b03adea2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb
5e72404790a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2162f40a29f0c3c8745c0
f50fba3852e566d44575c29d39a03f0cda721984b6f440591f355e12d439ff150aab7613499dbd49adabc8676eef
023b15b65bfc5ca06948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e8f2e6ff58001
75f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8
078cdfcb3868263ff8f0940054da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab760d
58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9f96f3ca9ec1dde434da7d2d392b905dd
f3d1f9af93d1af5950bd493f5aa731b4056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd468
40647e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241e221af44860018ab0856972e
194cd934";

/// RFC 9369 §A.2: the same client Initial protected for QUIC v2.
const V2_PACKET: &str = "\
d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071bf03dceebfa162e7
5d6c96058bdbfb127cdfcbf903388e99ad049f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d
21f57c5d250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a12834e3f249a78d395e0
d18f4d766004f1a2674802a747eaa901c3f10cda5500cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea
40afb6ef5253cd6818f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff3312ae50b187c1
433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3d396ae5a3fb512384b2fdd851f784a65e03f2c4f
be11a53c7777c023462239dd6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520bcfb
7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045636e7c0c0fe4eb0f697545460c806910
d2c355f1d253bc9d2452aaa549e27a1fac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de
7c1216ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e54df16efaf6ddea94e2c50b4c
d1dfe06017e0e9d02900cffe1935e0491d77ffb4fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb
08b847741c3b8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de714d19d61370f8149
748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff99c63a344d6a2ae8aa8e51b7b90a4a806105fcbca3150
6c446151adfeceb51b91abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd80bf4dc8
b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db848265e3e5eb72dfe8299ad7481a408322ca
c55786e52f633b2fb6b614eaed18d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc7e27a096d37a1a86952ec71bd89a
3e9a30a2a26162984d7740f81193e8238e61f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cf
a1e7071010d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b3d6758158197107c14eb
b193230cd1157380aa79cae1374a7c1e5bbcb80ee23e06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6
adc38b7ca7331dce8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d134b90c9058f8
632c798d4490da4987307cba922d61c39805d072b589bd52fdf1e86215c2d54e6670e07383a27bbffb5addf47d66
aa85a0c6f9f32e59d85a44dd5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e38d20
9d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89d5974ee12e5cf7d5da4d6a31123041f3
3e61407e76cffcdcfd7e19ba58cf4b536f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85
cb199a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96ba18b2faa745b6fe189cf772a
9f84cbfc";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn rfc9001_client_initial_keys() {
    let k = InitialKeys::client(Version::V1, &hex(DCID)).unwrap();
    assert_eq!(
        k.secret.to_vec(),
        hex("c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")
    );
    assert_eq!(k.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
    assert_eq!(k.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
    assert_eq!(k.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    let o = Opener::client(Version::V1, &hex(DCID)).unwrap();
    let sample: [u8; 16] = hex("d1b1c98dd7689fb8ec11d242b123dc9b").try_into().unwrap();
    assert_eq!(o.header_mask(&sample).to_vec(), hex("437b9aec36"));
}

#[test]
fn rfc9369_client_initial_keys() {
    let k = InitialKeys::client(Version::V2, &hex(DCID)).unwrap();
    assert_eq!(
        k.secret.to_vec(),
        hex("14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b")
    );
    assert_eq!(k.key.to_vec(), hex("8b1a0bc121284290a29e0971b5cd045d"));
    assert_eq!(k.iv.to_vec(), hex("91f73e2351d8fa91660e909f"));
    assert_eq!(k.hp.to_vec(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
    let o = Opener::client(Version::V2, &hex(DCID)).unwrap();
    let sample: [u8; 16] = hex("ffe67b6abcdb4298b485dd04de806071").try_into().unwrap();
    assert_eq!(o.header_mask(&sample).to_vec(), hex("94a0c95e80"));
}

/// Opens a sample packet: header fields, packet number 2, the CRYPTO frame then padding.
fn open_sample(version: Version, packet: &str) {
    let bytes = hex(packet);
    assert_eq!(bytes.len(), 1200);
    let mut it = Packets::new(&bytes);
    let p = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert_eq!(p.known, Some((version, LongType::Initial)));
    assert_eq!(p.version, version.wire());
    assert_eq!(p.dcid, hex(DCID));
    assert!(p.scid.is_empty() && p.token.is_empty());
    assert_eq!(p.pn_offset, 18);
    let o = Opener::client(version, p.dcid).unwrap();
    let mut buf = [0u8; crypto::MAX_PACKET];
    let opened = o.open(&p, None, &mut buf).unwrap();
    assert_eq!(opened.packet_number, 2);
    let frame = hex(CRYPTO_FRAME);
    assert_eq!(opened.payload.len(), 1162);
    assert_eq!(&opened.payload[..frame.len()], &frame[..]);
    assert!(opened.payload[frame.len()..].iter().all(|&b| b == 0));
    let frames: Vec<_> = Frames::new(opened.payload).map(Result::unwrap).collect();
    assert_eq!(
        frames,
        [
            Frame::Crypto {
                offset: 0,
                data: &frame[4..]
            },
            Frame::Padding(1162 - frame.len())
        ]
    );
}

#[test]
fn rfc9001_sample_client_initial_opens() {
    open_sample(Version::V1, V1_PACKET);
}

#[test]
fn rfc9369_sample_client_initial_opens() {
    open_sample(Version::V2, V2_PACKET);
}

#[test]
fn sample_client_initials_give_the_client_hello() {
    for (version, packet) in [(Version::V1, V1_PACKET), (Version::V2, V2_PACKET)] {
        let mut c = ClientInitials::new();
        assert_eq!(c.feed(&hex(packet)), Ok(HelloStatus::Complete));
        assert_eq!(c.version(), Some(version));
        let hello = c.client_hello().unwrap();
        assert_eq!(hello, &hex(CRYPTO_FRAME)[4..]);
        assert_eq!(hello.len(), 4 + 0xed);
        // server_name (type 0, 16 bytes: list of 14, host_name 11 bytes) and ALPN "alpn".
        let sni = [&hex("0000 0010 000e 00 000b")[..], b"example.com"].concat();
        assert!(contains(hello, &sni));
        assert!(contains(
            hello,
            &[&hex("0010 0007 0005 04")[..], b"alpn"].concat()
        ));
    }
}

#[test]
fn a_damaged_initial_does_not_open() {
    for packet in [V1_PACKET, V2_PACKET] {
        let mut bytes = hex(packet);
        bytes[600] ^= 1;
        let mut c = ClientInitials::new();
        assert_eq!(c.feed(&bytes), Err(QuicError::Decrypt));
        assert_eq!(c.status(), HelloStatus::Pending);
    }
    // Header bytes are authenticated too (the AEAD's associated data).
    let mut bytes = hex(V1_PACKET);
    bytes[7] ^= 1; // a byte of the DCID: the wrong keys
    assert_eq!(ClientInitials::new().feed(&bytes), Err(QuicError::Decrypt));
}

#[test]
fn versions_we_do_not_decrypt_are_named() {
    let mut bytes = hex(V1_PACKET);
    // draft-29, as in suricata-verify's quic-ietf ALPN "h3-29" era clients.
    bytes[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
    assert_eq!(
        ClientInitials::new().feed(&bytes),
        Err(QuicError::UnsupportedVersion)
    );
    let p = Packets::new(&bytes).next().unwrap().unwrap();
    assert_eq!(
        (p.version, p.known, p.dcid),
        (0xff00001d, None, &hex(DCID)[..])
    );
    // Version negotiation.
    bytes[1..5].copy_from_slice(&[0; 4]);
    assert_eq!(
        ClientInitials::new().feed(&bytes),
        Err(QuicError::UnsupportedVersion)
    );
    // A short header (1-RTT) and an empty datagram.
    assert_eq!(
        ClientInitials::new().feed(&[0x40, 1, 2, 3]),
        Err(QuicError::NotLongHeader)
    );
    assert_eq!(
        ClientInitials::new().feed(&[]),
        Err(QuicError::NotLongHeader)
    );
}

#[test]
fn impossible_headers_are_refused() {
    // DCID length 21 in v1.
    let mut b = vec![0xc0, 0, 0, 0, 1, 21];
    b.extend([0u8; 21]);
    b.extend([0, 0, 0x41, 0x00]);
    assert_eq!(
        Packets::new(&b).next(),
        Some(Err(QuicError::BadConnectionId))
    );
    // Length beyond the datagram.
    let b = [0xc0, 0, 0, 0, 1, 0, 0, 0, 0x44, 0xff, 0, 0];
    assert_eq!(Packets::new(&b).next(), Some(Err(QuicError::Truncated)));
    // A token length of 2^62 - 1.
    let b = [
        0xc0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(Packets::new(&b).next(), Some(Err(QuicError::Truncated)));
    // Too short to sample.
    let b = [0xc0, 0, 0, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(ClientInitials::new().feed(&b), Err(QuicError::ShortPayload));
}

#[test]
fn varints_of_every_length() {
    // RFC 9000 §A.1's examples.
    assert_eq!(
        packet::varint(&hex("c2197c5eff14e88c")),
        Some((151_288_809_941_952_652, 8))
    );
    assert_eq!(packet::varint(&hex("9d7f3e7d")), Some((494_878_333, 4)));
    assert_eq!(packet::varint(&hex("7bbd")), Some((15_293, 2)));
    assert_eq!(packet::varint(&hex("25")), Some((37, 1)));
    assert_eq!(packet::varint(&hex("4025")), Some((37, 2)));
    assert_eq!(packet::varint(&hex("c2197c")), None);
    assert_eq!(packet::varint(&[]), None);
}

#[test]
fn packet_numbers_decode_near_the_largest() {
    // RFC 9000 §A.3's example.
    assert_eq!(
        crypto::decode_packet_number(Some(0xa82f30ea), 0x9b32, 16),
        0xa82f9b32
    );
    assert_eq!(crypto::decode_packet_number(None, 2, 32), 2);
    assert_eq!(crypto::decode_packet_number(Some(255), 1, 8), 257);
    assert_eq!(
        crypto::decode_packet_number(Some(u64::MAX), 0, 8),
        (1 << 62) - 256
    );
}

#[test]
fn frames_of_an_initial() {
    // PING, PADDING×2, ACK with one extra range, ACK-ECN, CRYPTO "abc" at 5,
    // CONNECTION_CLOSE with a 2-byte reason, then STREAM (not allowed in an Initial).
    let payload = hex(
        "01 0000 02 05 00 01 00 01 00 03 05 00 00 00 00 00 00 06 05 03 616263 1c 00 00 02 6869 08",
    );
    let f: Vec<_> = Frames::new(&payload).collect();
    assert_eq!(
        f,
        [
            Ok(Frame::Ping),
            Ok(Frame::Padding(2)),
            Ok(Frame::Ack),
            Ok(Frame::Ack),
            Ok(Frame::Crypto {
                offset: 5,
                data: b"abc"
            }),
            Ok(Frame::ConnectionClose),
            Err(QuicError::BadFrame),
        ]
    );
    // A CRYPTO frame past 2^62, an ACK claiming more ranges than bytes, a cut CRYPTO.
    for bad in [
        "06 ffffffffffffffff 01 00",
        "02 00 00 3fff 00 0000",
        "06 00 05 6162",
    ] {
        let b = hex(bad);
        let f: Vec<_> = Frames::new(&b).collect();
        assert_eq!(f, [Err(QuicError::BadFrame)], "{bad}");
    }
}

/// A ClientHello-shaped handshake message of `body` bytes.
fn hello(body: usize) -> Vec<u8> {
    let mut m = vec![1, (body >> 16) as u8, (body >> 8) as u8, body as u8];
    m.extend((0..body).map(|i| (i * 7 + 3) as u8));
    m
}

#[test]
fn the_assembler_takes_frames_in_any_order() {
    let m = hello(1500);
    // Pieces of 97 bytes, last first, with a duplicate and an overlap.
    let mut a = CryptoAssembler::new();
    let pieces: Vec<(usize, usize)> = (0..m.len())
        .step_by(97)
        .map(|s| (s, (s + 97).min(m.len())))
        .collect();
    for (i, &(s, e)) in pieces.iter().enumerate().rev() {
        let st = a.insert(s as u64, &m[s..e]);
        if i > 0 {
            assert_eq!(st, HelloStatus::Pending);
            assert!(a.client_hello().is_none());
        }
        a.insert(s as u64, &m[s..e]);
    }
    a.insert(10, &m[10..400]);
    assert_eq!(a.status(), HelloStatus::Complete);
    assert_eq!(a.client_hello(), Some(&m[..]));
    assert_eq!(a.dropped(), 0);
    // Trailing bytes of the next message do not belong to the hello.
    let mut b = CryptoAssembler::new();
    let mut more = m.clone();
    more.extend([2, 0, 0, 1, 9]);
    b.insert(0, &more);
    assert_eq!(b.client_hello(), Some(&m[..]));
    b.reset();
    assert_eq!(b.status(), HelloStatus::Pending);
    assert!(b.prefix().is_empty());
}

#[test]
fn the_assembler_is_bounded() {
    let m = hello(assembler::CAPACITY);
    let mut a = CryptoAssembler::new();
    assert_eq!(a.insert(0, &m[..3]), HelloStatus::Pending);
    assert_eq!(a.insert(0, &m), HelloStatus::TooLong);
    assert_eq!(a.prefix(), &m[..assembler::CAPACITY]);
    assert_eq!(a.dropped(), 4);
    assert_eq!(a.insert(u64::MAX - 3, b"xyz"), HelloStatus::TooLong);
    assert_eq!(a.dropped(), 7);
    let mut b = CryptoAssembler::new();
    assert_eq!(b.insert(0, &[22, 3, 1]), HelloStatus::NotClientHello);
    let mut c = CryptoAssembler::new();
    assert_eq!(c.insert(4, b"late"), HelloStatus::Pending);
    assert!(c.prefix().is_empty());
}

pub(crate) use crate::gen::quic::{crypto_frame, seal_initial};

#[test]
fn a_client_hello_across_initials_and_datagrams() {
    let m = hello(2100);
    let odcid = hex("0011223344556677");
    for version in [Version::V1, Version::V2] {
        // Datagram 1: the second half's first frame, and PING. Datagram 2: two coalesced
        // Initials, the later one with the DCID the server chose (keys stay the first's),
        // followed by a 1-RTT packet's bytes. Datagram 3: the rest.
        let d1 = seal_initial(
            version,
            &odcid,
            &odcid,
            0,
            &[&crypto_frame(1000, &m[1000..1600])[..], &[1]].concat(),
            1200,
        );
        let p2 = seal_initial(version, &odcid, &odcid, 1, &crypto_frame(0, &m[..500]), 0);
        let p3 = seal_initial(
            version,
            &odcid,
            b"srv-cid",
            2,
            &crypto_frame(500, &m[500..1000]),
            0,
        );
        let d2 = [&p2[..], &p3[..], &[0x41, 1, 2, 3][..]].concat();
        let d3 = seal_initial(
            version,
            &odcid,
            b"srv-cid",
            3,
            &crypto_frame(1600, &m[1600..]),
            1200,
        );
        let mut c = ClientInitials::new();
        assert_eq!(c.feed(&d1), Ok(HelloStatus::Pending));
        assert_eq!(c.feed(&d2), Ok(HelloStatus::Pending));
        assert_eq!(c.assembler().prefix().len(), 1600);
        assert_eq!(c.feed(&d3), Ok(HelloStatus::Complete));
        assert_eq!(c.client_hello(), Some(&m[..]));
        assert_eq!((c.initials(), c.version()), (4, Some(version)));
    }
}

#[test]
fn after_a_retry_the_keys_follow_the_new_dcid() {
    let m = hello(300);
    let first = hex("0011223344556677");
    let retried = hex("a1a2a3a4a5a6a7a8");
    let mut c = ClientInitials::new();
    let d1 = seal_initial(
        Version::V1,
        &first,
        &first,
        0,
        &crypto_frame(0, &m[..100]),
        1200,
    );
    assert_eq!(c.feed(&d1), Ok(HelloStatus::Pending));
    let d2 = seal_initial(
        Version::V1,
        &retried,
        &retried,
        1,
        &crypto_frame(0, &m),
        1200,
    );
    assert_eq!(c.feed(&d2), Ok(HelloStatus::Complete));
    assert_eq!(c.client_hello(), Some(&m[..]));
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(d in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut c = ClientInitials::new();
        let _ = c.feed(&d);
        for p in Packets::new(&d).flatten() {
            prop_assert!(p.bytes.len() <= d.len());
            prop_assert!(p.pn_offset <= p.bytes.len());
        }
        let _ = Frames::new(&d).count();
    }

    #[test]
    fn damaged_sample_packets_never_panic(at in 0usize..1200, x in 1u8..=255, cut in 0usize..1200) {
        for packet in [V1_PACKET, V2_PACKET] {
            let mut b = hex(packet);
            b[at] ^= x;
            b.truncate(cut.max(1));
            let mut c = ClientInitials::new();
            prop_assert!(c.feed(&b).is_err() || c.status() == HelloStatus::Complete);
        }
    }

    #[test]
    fn the_assembler_gets_any_order_right(
        body in 0usize..3000,
        cuts in proptest::collection::vec(0usize..3004, 0..20),
        seed in any::<u64>(),
    ) {
        let m = hello(body);
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < m.len()).collect();
        bounds.extend([0, m.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..pieces.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            pieces.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut a = CryptoAssembler::new();
        for (i, &(s, e)) in pieces.iter().enumerate() {
            let st = a.insert(s as u64, &m[s..e]);
            if i + 1 < pieces.len() {
                prop_assert_ne!(st, HelloStatus::Complete);
            }
        }
        prop_assert_eq!(a.status(), HelloStatus::Complete);
        prop_assert_eq!(a.client_hello(), Some(&m[..]));
    }

    #[test]
    fn arbitrary_crypto_frames_never_panic(
        frames in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..30),
    ) {
        let mut a = CryptoAssembler::new();
        for (o, d) in &frames {
            let _ = a.insert(*o % 5000, d);
            let _ = a.insert(*o, d);
            prop_assert!(a.prefix().len() <= assembler::CAPACITY);
            if let Some(h) = a.client_hello() {
                prop_assert!(h.len() <= a.prefix().len());
            }
        }
    }
}

#[test]
fn a_connection_state_is_small_and_fixed() {
    // The 4 KiB CRYPTO buffer, its 512-byte bitmap, and two AES-128 key schedules (GCM's
    // and header protection's, each kept for both the AES-NI and the software path):
    // 6128 bytes on x86-64 with aes 0.8.
    let n = std::mem::size_of::<ClientInitials>();
    assert!(n <= 6 * 1024, "{n}");
}

#[test]
fn a_datagram_opens_at_most_four_initials() {
    // Six Initials coalesced in one datagram, each under keys of its own connection id: a
    // client never sends that; each would cost a key derivation and a decryption.
    let mut d = Vec::new();
    for i in 0..6u8 {
        let dcid = [i, 1, 2, 3, 4, 5, 6, 7];
        d.extend(seal_initial(Version::V1, &dcid, &dcid, 0, &[1], 0));
    }
    let mut c = ClientInitials::new();
    let _ = c.feed(&d);
    assert_eq!(c.initials(), u32::from(MAX_INITIALS_PER_DATAGRAM));
}
