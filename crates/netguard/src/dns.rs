//! The DNS wire format, as much of it as an A/AAAA stub resolver needs (RFC 1035, RFC 3596).
//!
//! whomp is a static binary, so it cannot lean on the C library's resolver, and the design wants
//! the addresses it checks to be the addresses it connects to, which a resolver hidden inside an
//! HTTP client would not guarantee. The parser trusts nothing: every read is bounds-checked,
//! compression pointers are followed a bounded number of times, and only records on the CNAME
//! chain that starts at the question's name are believed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;

/// A CNAME chain longer than this is treated as having no addresses.
const MAX_CNAME_HOPS: usize = 8;
/// Compression pointers followed while reading one name, which also breaks pointer loops.
const MAX_POINTERS: usize = 32;

/// The question of a message: a lowercase name without the trailing dot, a type and a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) name: String,
    pub(crate) qtype: u16,
    pub(crate) class: u16,
}

/// The data of an answer record this resolver understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Other,
}

/// An answer record: owner name (lowercase), class and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) class: u16,
    pub(crate) data: Data,
}

/// A parsed DNS message: the header fields we look at, the questions and the answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: u16,
    pub(crate) response: bool,
    pub(crate) opcode: u8,
    pub(crate) truncated: bool,
    pub(crate) rcode: u8,
    pub(crate) questions: Vec<Question>,
    pub(crate) answers: Vec<Record>,
}

impl Message {
    /// Whether this is the response to our query `id` for `name` and `qtype`; anything else
    /// arriving on the socket is ignored.
    pub(crate) fn answers(&self, id: u16, name: &str, qtype: u16) -> bool {
        self.id == id
            && self.response
            && self.opcode == 0
            && self.questions.len() == 1
            && self
                .questions
                .first()
                .is_some_and(|q| q.name == name && q.qtype == qtype && q.class == CLASS_IN)
    }

    /// The addresses of type `qtype` for `name`, following the CNAME chain in the answer.
    pub(crate) fn addresses(&self, name: &str, qtype: u16) -> Vec<IpAddr> {
        let mut current = name.to_string();
        for _ in 0..=MAX_CNAME_HOPS {
            let owned = || {
                self.answers
                    .iter()
                    .filter(|r| r.class == CLASS_IN && r.name == current)
            };
            let addrs: Vec<IpAddr> = owned()
                .filter_map(|r| match (&r.data, qtype) {
                    (Data::A(ip), TYPE_A) => Some(IpAddr::V4(*ip)),
                    (Data::Aaaa(ip), TYPE_AAAA) => Some(IpAddr::V6(*ip)),
                    _ => None,
                })
                .collect();
            if !addrs.is_empty() {
                return addrs;
            }
            let next = owned().find_map(|r| match &r.data {
                Data::Cname(target) => Some(target.clone()),
                _ => None,
            });
            match next {
                Some(target) => current = target,
                None => return Vec::new(),
            }
        }
        Vec::new()
    }
}

/// Checks that `name` can be sent in a query: labels of 1 to 63 bytes, 255 bytes in all.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    let mut wire = Vec::new();
    encode_name(&mut wire, name)
}

/// A recursive query (RD set) for `name` and `qtype`, without EDNS: answers over 512 bytes come
/// back truncated and are fetched again over TCP.
pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(12 + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(&mut out, name)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// A response to `question`, for the test DNS server. Owner names equal to the question's name
/// are compressed to a pointer, so that the client's decompression is exercised.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn encode_response(
    id: u16,
    question: &Question,
    rcode: u8,
    truncated: bool,
    answers: &[Record],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    let mut flags: u16 = 0x8180 | u16::from(rcode & 0x0f);
    if truncated {
        flags |= 0x0200;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    let count = u16::try_from(answers.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    // Names that cannot be encoded are the test's own mistake; they go out as the root name.
    if encode_name(&mut out, &question.name).is_err() {
        out.push(0);
    }
    out.extend_from_slice(&question.qtype.to_be_bytes());
    out.extend_from_slice(&question.class.to_be_bytes());
    for record in answers.iter().take(usize::from(count)) {
        if record.name == question.name {
            out.extend_from_slice(&[0xc0, 12]);
        } else if encode_name(&mut out, &record.name).is_err() {
            out.push(0);
        }
        let (rtype, rdata) = match &record.data {
            Data::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Data::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            Data::Cname(target) => {
                let mut rdata = Vec::new();
                if encode_name(&mut rdata, target).is_err() {
                    rdata = vec![0];
                }
                (TYPE_CNAME, rdata)
            }
            Data::Other => (16, b"\x02hi".to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&record.class.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

/// Appends `name` in wire form; the empty name and `.` are the root.
fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len()).map_err(|_| "a label is longer than 63 bytes")?;
            if len == 0 {
                return Err("the name has an empty label");
            }
            if len > 63 {
                return Err("a label is longer than 63 bytes");
            }
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > 255 {
        return Err("the name is longer than 255 bytes");
    }
    Ok(())
}

/// Parses a message; malformed input is an error, never a panic.
pub(crate) fn parse(buf: &[u8]) -> Result<Message, &'static str> {
    let mut reader = Reader { buf, pos: 0 };
    let id = reader.u16()?;
    let flags = reader.u16()?;
    let qdcount = reader.u16()?;
    let ancount = reader.u16()?;
    reader.u16()?;
    reader.u16()?;
    let mut questions = Vec::new();
    for _ in 0..qdcount {
        let name = reader.name()?;
        let qtype = reader.u16()?;
        let class = reader.u16()?;
        questions.push(Question { name, qtype, class });
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        let name = reader.name()?;
        let rtype = reader.u16()?;
        let class = reader.u16()?;
        reader.take(4)?;
        let len = usize::from(reader.u16()?);
        let rdata_start = reader.pos;
        let rdata = reader.take(len)?;
        let data = match rtype {
            TYPE_A => Data::A(Ipv4Addr::from(
                <[u8; 4]>::try_from(rdata).map_err(|_| "an A record is not 4 bytes long")?,
            )),
            TYPE_AAAA => Data::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata).map_err(|_| "an AAAA record is not 16 bytes long")?,
            )),
            TYPE_CNAME => {
                let mut inner = Reader {
                    buf,
                    pos: rdata_start,
                };
                Data::Cname(inner.name()?)
            }
            _ => Data::Other,
        };
        answers.push(Record { name, class, data });
    }
    Ok(Message {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0x0f) as u8,
        questions,
        answers,
    })
}

/// A bounds-checked cursor over a message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or("the message is truncated")?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or("the message is truncated")?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        self.take(1)?
            .first()
            .copied()
            .ok_or("the message is truncated")
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([
            bytes.first().copied().unwrap_or(0),
            bytes.get(1).copied().unwrap_or(0),
        ]))
    }

    /// Reads a possibly compressed name, lowercased; bytes that cannot appear in a host name are
    /// written as `\DDD` so that such a name never equals one we asked for.
    fn name(&mut self) -> Result<String, &'static str> {
        let mut name = String::new();
        let mut cursor = Reader {
            buf: self.buf,
            pos: self.pos,
        };
        let mut resume = None;
        let mut pointers = 0;
        loop {
            let len = cursor.u8()?;
            match len & 0xc0 {
                0x00 if len == 0 => break,
                0x00 => {
                    let label = cursor.take(usize::from(len))?;
                    if !name.is_empty() {
                        name.push('.');
                    }
                    for &b in label {
                        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                            name.push(char::from(b.to_ascii_lowercase()));
                        } else {
                            name.push_str(&format!("\\{b:03}"));
                        }
                    }
                    if name.len() > 1024 {
                        return Err("a name is too long");
                    }
                }
                0xc0 => {
                    let low = cursor.u8()?;
                    pointers += 1;
                    if pointers > MAX_POINTERS {
                        return Err("a name has too many compression pointers");
                    }
                    resume.get_or_insert(cursor.pos);
                    cursor.pos = (usize::from(len & 0x3f) << 8) | usize::from(low);
                }
                _ => return Err("a name uses an unknown label type"),
            }
        }
        self.pos = resume.unwrap_or(cursor.pos);
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(name: &str, qtype: u16) -> Question {
        Question {
            name: name.into(),
            qtype,
            class: CLASS_IN,
        }
    }

    fn record(name: &str, data: Data) -> Record {
        Record {
            name: name.into(),
            class: CLASS_IN,
            data,
        }
    }

    #[test]
    fn query_round_trips() {
        let query = encode_query(0xbeef, "a.example", TYPE_AAAA).unwrap();
        let message = parse(&query).unwrap();
        assert_eq!(message.id, 0xbeef);
        assert!(!message.response);
        assert_eq!(message.questions, [question("a.example", TYPE_AAAA)]);
        assert!(
            !message.answers(0xbeef, "a.example", TYPE_AAAA),
            "a query is not an answer"
        );
    }

    #[test]
    fn refuses_unencodable_names() {
        assert_eq!(check_name("a..example"), Err("the name has an empty label"));
        assert_eq!(
            check_name(&"a".repeat(64)),
            Err("a label is longer than 63 bytes")
        );
        assert_eq!(
            check_name(&"a".repeat(300)),
            Err("a label is longer than 63 bytes")
        );
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(check_name(&long), Err("the name is longer than 255 bytes"));
        assert_eq!(check_name("a.example."), Ok(()));
    }

    #[test]
    fn follows_cname_chains_in_the_answer() {
        let answers = [
            record("a.example", Data::Cname("b.example".into())),
            record("b.example", Data::Cname("c.example".into())),
            record("c.example", Data::A(Ipv4Addr::new(93, 184, 216, 34))),
            record("unrelated.example", Data::A(Ipv4Addr::new(10, 0, 0, 1))),
            record("c.example", Data::Other),
        ];
        let q = question("a.example", TYPE_A);
        let wire = encode_response(7, &q, 0, false, &answers);
        let message = parse(&wire).unwrap();
        assert!(message.answers(7, "a.example", TYPE_A));
        assert!(!message.answers(8, "a.example", TYPE_A));
        assert!(!message.answers(7, "b.example", TYPE_A));
        assert!(!message.answers(7, "a.example", TYPE_AAAA));
        assert_eq!(message.answers, answers);
        assert_eq!(
            message.addresses("a.example", TYPE_A),
            [IpAddr::from([93, 184, 216, 34])]
        );
        assert_eq!(
            message.addresses("a.example", TYPE_AAAA),
            Vec::<IpAddr>::new()
        );
    }

    #[test]
    fn stops_at_cname_loops() {
        let answers = [
            record("a.example", Data::Cname("b.example".into())),
            record("b.example", Data::Cname("a.example".into())),
        ];
        let wire = encode_response(7, &question("a.example", TYPE_A), 0, false, &answers);
        assert_eq!(
            parse(&wire).unwrap().addresses("a.example", TYPE_A),
            Vec::<IpAddr>::new()
        );
    }

    #[test]
    fn survives_malformed_messages() {
        let wire = encode_response(
            7,
            &question("a.example", TYPE_A),
            0,
            false,
            &[record("a.example", Data::A(Ipv4Addr::LOCALHOST))],
        );
        for len in 0..wire.len() {
            assert!(parse(&wire[..len]).is_err(), "prefix of {len} bytes");
        }
        // A pointer to itself loops; the reader gives up.
        let mut looped = wire[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            parse(&looped),
            Err("a name has too many compression pointers")
        );
        let mut bad_label = wire[..12].to_vec();
        bad_label.extend_from_slice(&[0x80, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&bad_label), Err("a name uses an unknown label type"));
        // An A record whose data is 3 bytes long.
        let mut short_a = wire.clone();
        let len_at = short_a.len() - 6;
        short_a[len_at + 1] = 3;
        short_a.pop();
        assert_eq!(parse(&short_a), Err("an A record is not 4 bytes long"));
    }

    #[test]
    fn odd_bytes_in_names_never_match() {
        let mut wire = encode_query(1, "a.example", TYPE_A).unwrap();
        wire[13] = b'.';
        let message = parse(&wire).unwrap();
        assert_eq!(message.questions[0].name, "\\046.example");
    }
}
