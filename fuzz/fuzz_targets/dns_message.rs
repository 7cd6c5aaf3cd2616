//! Any byte string as a DNS message: `parse` must return, and when it accepts the message,
//! every accessor and iterator must run to its end without panicking and keep its promises
//! (also when `damage()` reports a tolerated bad authority/additional record).

#![no_main]

use libfuzzer_sys::fuzz_target;
use outflow::dns::parser::{type_name, Message, Name, MAX_NAME_TEXT, MAX_NAME_WIRE};

fn name(n: &Name<'_>) {
    let mut out = [0u8; MAX_NAME_WIRE];
    let len = n.write_lower(&mut out);
    assert!(len <= MAX_NAME_TEXT);
    assert_eq!(len, n.len_text());
    let mut original = [0u8; MAX_NAME_WIRE];
    assert_eq!(n.write_original(&mut original), len);
    assert!(original.eq_ignore_ascii_case(&out));
    assert_eq!(n.label_count(), n.labels().count());
    assert!(n.labels().all(|l| !l.is_empty() && l.len() <= 63));
    assert!(n.eq_ignore_case(n));
    if n.labels().all(|l| !l.contains(&b'.')) {
        assert!(n.eq_text(out.get(..len).unwrap_or_default()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let _ = (msg.id(), msg.is_response(), msg.opcode(), msg.edns());
    let _ = (msg.aa(), msg.tc(), msg.rd(), msg.ra());
    assert!(msg.rcode() < 1 << 12);
    assert_eq!(msg.questions().count(), usize::from(msg.qdcount()));
    assert_eq!(msg.answers().count(), usize::from(msg.ancount()));
    // A damaged authority/additional section ends at its last good record.
    let (ns, ar) = (msg.authorities().count(), msg.additionals().count());
    if msg.damage().is_none() {
        assert_eq!(ns, usize::from(msg.nscount()));
        assert_eq!(ar, usize::from(msg.arcount()));
    } else {
        assert!(ns <= usize::from(msg.nscount()) && ar <= usize::from(msg.arcount()));
    }
    for q in msg.questions() {
        name(&q.name);
        let _ = type_name(q.qtype);
    }
    for r in msg
        .answers()
        .chain(msg.authorities())
        .chain(msg.additionals())
    {
        name(&r.name);
        let _ = (r.a(), r.aaaa(), type_name(r.rtype), r.rclass, r.ttl);
        assert_eq!(
            data.get(r.rdata_offset..r.rdata_offset + r.rdata.len()),
            Some(r.rdata)
        );
        if let Some(t) = r.target() {
            name(&t);
        }
        let _ = r.txt().map(<[u8]>::len).sum::<usize>();
    }
});
