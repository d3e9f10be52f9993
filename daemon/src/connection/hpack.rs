//! HPACK (RFC 7541) for `authority.rs`: decoding the header blocks a
//! client sends, with its dynamic table, and encoding blocks again as
//! literals that leave the server's table untouched. Small and exact rather
//! than fast: only connections whose `:authority` needs rewriting use it
//! beyond their first header block.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// One header field of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent "never indexed" (a secret): passed on the same way.
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block truncated")]
    Truncated,
    #[error("integer of more than 32 bits")]
    Integer,
    #[error("index {0} names no table entry")]
    Index(usize),
    #[error("malformed Huffman-coded string")]
    Huffman,
    #[error("dynamic table size update to {0}, above the limit {1}")]
    SizeUpdate(usize, usize),
    #[error("dynamic table size update after the first field of a block")]
    LateSizeUpdate,
}

/// Every entry takes this much of the table besides its name and value.
const ENTRY_OVERHEAD: usize = 32;

/// The decoding side of one connection: the dynamic table the client's
/// encoder builds.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the server: what size updates may ask.
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// The fields of one complete header block, in order.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut input = Input { block, at: 0 };
        let mut fields = Vec::new();
        while let Some(first) = input.peek() {
            if first & 0x80 != 0 {
                let (name, value) = self.entry(input.integer(7)?)?;
                fields.push(Field {
                    name,
                    value,
                    sensitive: false,
                });
            } else if first & 0x40 != 0 {
                let field = self.literal(&mut input, 6, false)?;
                self.insert(field.name.clone(), field.value.clone());
                fields.push(field);
            } else if first & 0x20 != 0 {
                if !fields.is_empty() {
                    return Err(HpackError::LateSizeUpdate);
                }
                self.resize(input.integer(5)?)?;
            } else {
                let sensitive = first & 0x10 != 0;
                fields.push(self.literal(&mut input, 4, sensitive)?);
            }
        }
        Ok(fields)
    }

    fn literal(
        &self,
        input: &mut Input<'_>,
        prefix: u8,
        sensitive: bool,
    ) -> Result<Field, HpackError> {
        let name = match input.integer(prefix)? {
            0 => input.string()?,
            index => self.entry(index)?.0,
        };
        let value = input.string()?;
        Ok(Field {
            name,
            value,
            sensitive,
        })
    }

    fn entry(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        if (1..=STATIC_TABLE.len()).contains(&index) {
            let (name, value) = STATIC_TABLE[index - 1];
            return Ok((name.to_vec(), value.to_vec()));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|at| self.table.get(at))
            .cloned()
            .ok_or(HpackError::Index(index))
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.table.push_front((name, value));
    }

    fn resize(&mut self, max_size: usize) -> Result<(), HpackError> {
        if max_size > self.limit {
            return Err(HpackError::SizeUpdate(max_size, self.limit));
        }
        self.max_size = max_size;
        self.evict_to(max_size);
        Ok(())
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// @fields as one block of literals that the server's decoder does not
/// index ("never indexed" where the client said so), strings not
/// Huffman-coded.
pub fn encode_literals(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        out.push(if field.sensitive { 0x10 } else { 0x00 });
        put_string(&field.name, out);
        put_string(&field.value, out);
    }
}

fn put_string(bytes: &[u8], out: &mut Vec<u8>) {
    put_integer(bytes.len(), 7, 0x00, out);
    out.extend_from_slice(bytes);
}

fn put_integer(mut value: usize, prefix: u8, flags: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A header block being read.
struct Input<'a> {
    block: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.at).copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let byte = self.peek().ok_or(HpackError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    /// An integer with a @prefix-bit prefix (section 5.1), at most 32 bits.
    fn integer(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let max = (1u64 << prefix) - 1;
        let mut value = u64::from(self.byte()?) & max;
        if value < max {
            return Ok(value as usize);
        }
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value += u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value)
                    .map(|v| v as usize)
                    .map_err(|_| HpackError::Integer);
            }
        }
        Err(HpackError::Integer)
    }

    /// A string literal (section 5.2), Huffman-decoded when it says so.
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.block.len());
        let bytes = &self.block[self.at..end.ok_or(HpackError::Truncated)?];
        self.at += len;
        if huffman {
            huffman_decode(bytes)
        } else {
            Ok(bytes.to_vec())
        }
    }
}

/// The canonical Huffman code of Appendix B, by length: the codes of one
/// length are consecutive and ordered by symbol.
struct Canonical {
    /// Symbols ordered by (code length, code).
    symbols: Vec<u16>,
    /// Per length: its first code, how many codes, where they start in @symbols.
    first_code: [u32; 31],
    count: [u32; 31],
    offset: [u32; 31],
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..HUFFMAN_CODES.len() as u16).collect();
        symbols.sort_by_key(|&s| (HUFFMAN_CODES[s as usize].1, HUFFMAN_CODES[s as usize].0));
        let mut code = Canonical {
            symbols,
            first_code: [0; 31],
            count: [0; 31],
            offset: [0; 31],
        };
        for (i, &symbol) in code.symbols.iter().enumerate() {
            let (bits, len) = HUFFMAN_CODES[symbol as usize];
            let len = len as usize;
            if code.count[len] == 0 {
                code.first_code[len] = bits;
                code.offset[len] = i as u32;
            }
            code.count[len] += 1;
        }
        code
    })
}

/// Decodes a Huffman-coded string (section 5.2): at most 7 bits of padding,
/// all ones, and no EOS symbol inside.
fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, HpackError> {
    let code = canonical();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut acc, mut bits) = (0u64, 0u32);
    for &byte in bytes {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        'symbols: while bits >= 5 {
            for len in 5..=30.min(bits) {
                let candidate = ((acc >> (bits - len)) & ((1 << len) - 1)) as u32;
                let len = len as usize;
                if code.count[len] > 0
                    && candidate >= code.first_code[len]
                    && candidate - code.first_code[len] < code.count[len]
                {
                    let at = code.offset[len] + candidate - code.first_code[len];
                    let symbol = code.symbols[at as usize];
                    if symbol == 256 {
                        return Err(HpackError::Huffman);
                    }
                    out.push(symbol as u8);
                    bits -= len as u32;
                    acc &= (1u64 << bits) - 1;
                    continue 'symbols;
                }
            }
            if bits >= 30 {
                return Err(HpackError::Huffman);
            }
            break;
        }
    }
    let padding = (1u64 << bits) - 1;
    if bits > 7 || acc & padding != padding {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

/// RFC 7541 Appendix A, index 1 first.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// RFC 7541 Appendix B: code (right-aligned) and length of each symbol; 256 is EOS.
const HUFFMAN_CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn names_values(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(&f.name).into_owned(),
                    String::from_utf8_lossy(&f.value).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 C.4: three requests with Huffman coding, sharing the table.
    #[test]
    fn appendix_c4_requests_with_huffman_coding() {
        let mut decoder = Decoder::new(4096);
        let first = decoder
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .expect("C.4.1");
        assert_eq!(
            names_values(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = decoder
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"))
            .expect("C.4.2");
        assert_eq!(
            names_values(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = decoder
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .expect("C.4.3");
        assert_eq!(
            names_values(&third),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(decoder.size, 164);
    }

    /// RFC 7541 C.5: responses with a 256-byte table, evicting.
    #[test]
    fn appendix_c5_eviction() {
        let mut decoder = Decoder::new(256);
        decoder
            .decode(&hex(
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 \
                          7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 \
                          3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            ))
            .expect("C.5.1");
        decoder.decode(&hex("4803 3330 37c1 c0bf")).expect("C.5.2");
        assert_eq!(decoder.size, 222);
        assert_eq!(decoder.table.len(), 4);
    }

    #[test]
    fn literals_round_trip_and_leave_no_table_behind() {
        let fields = vec![
            Field {
                name: b":authority".to_vec(),
                value: b"localhost".to_vec(),
                sensitive: false,
            },
            Field {
                name: b"x-long".to_vec(),
                value: vec![b'v'; 300],
                sensitive: false,
            },
            Field {
                name: b"authorization".to_vec(),
                value: b"secret".to_vec(),
                sensitive: true,
            },
        ];
        let mut block = Vec::new();
        encode_literals(&fields, &mut block);
        let mut decoder = Decoder::new(4096);
        assert_eq!(decoder.decode(&block).expect("decodes"), fields);
        assert!(decoder.table.is_empty());
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(decoder.decode(&[0x80]), Err(HpackError::Index(0)));
        assert_eq!(decoder.decode(&[0xbe]), Err(HpackError::Index(62)));
        assert_eq!(
            decoder.decode(&[0x41, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decoder.decode(&[0x3f, 0xe1, 0x1f]),
            Ok(vec![]),
            "4096: the limit itself"
        );
        assert_eq!(
            decoder.decode(&[0x3f, 0xe2, 0x1f]),
            Err(HpackError::SizeUpdate(4097, 4096))
        );
        assert_eq!(
            decoder.decode(&[0x82, 0x20]),
            Err(HpackError::LateSizeUpdate)
        );
        assert_eq!(
            decoder.decode(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::Integer)
        );
        // Huffman: an EOS inside, and padding that is not all ones.
        assert_eq!(
            decoder.decode(&[0x00, 0x81, 0xff, 0x00]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decoder.decode(&[0x00, 0x81, 0x00, 0x00]),
            Err(HpackError::Huffman)
        );
    }
}
