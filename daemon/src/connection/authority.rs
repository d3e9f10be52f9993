//! Standard gRPC clients on a Unix socket send an `:authority` that is no
//! host: grpc-core since 1.57 (grpcio, grpc++, ...) sends the socket path
//! percent-encoded, grpc-java and grpc-swift the path itself. The h2 crate
//! under tonic refuses such a request as malformed (`RST_STREAM` with
//! `PROTOCOL_ERROR`; hyperium/h2#487 has been open since 2020).
//!
//! [`AuthorityFix`] stands between the socket and h2 on the client's side
//! of a connection. It passes bytes through untouched until the first
//! header block is complete and decides from it: an `:authority` h2 accepts
//! (the C client's `localhost`), or none, and it passes every later byte
//! straight through (no copy, no parsing); one h2 refuses, and from then on
//! it decodes every header block of the connection with the client's
//! dynamic table (HPACK is stateful) and hands h2 the same fields as
//! literals, with `:authority: localhost` (what grpc-go and grpc-dart send on
//! a Unix socket). Frames other than HEADERS and CONTINUATION pass
//! unchanged.

use std::io;

use super::hpack::{self, Decoder, Field};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// What HPACK's dynamic table may hold: h2's SETTINGS_HEADER_TABLE_SIZE,
/// the protocol's default (tonic does not change it).
const HEADER_TABLE_SIZE: usize = 4096;
/// The largest header block (compressed) buffered for decoding; h2 itself
/// refuses header lists past 16 KiB by default.
const MAX_BLOCK_BYTES: usize = 256 * 1024;
/// Frames written here are no larger: every HTTP/2 peer accepts this much
/// (SETTINGS_MAX_FRAME_SIZE cannot be set lower).
const MAX_FRAME_PAYLOAD: usize = 16384;
/// What a rewritten `:authority` says.
const LOCALHOST: &[u8] = b"localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Until the first header block is complete: frames are held raw.
    Deciding,
    /// Every header block is re-encoded.
    Rewriting,
    /// Bytes pass untouched.
    Passing,
}

/// A 9-byte frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> Self {
        Self {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(length: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
    }
}

/// A header block being received (HEADERS, then CONTINUATION frames).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream of one connection, with its header
/// blocks rewritten when their `:authority` needs it.
#[derive(Debug)]
pub struct AuthorityFix {
    mode: Mode,
    /// Received and not parsed yet.
    input: Vec<u8>,
    /// Ready for h2, from `output_at` on.
    output: Vec<u8>,
    output_at: usize,
    preface_seen: bool,
    /// Payload bytes of a frame being passed through still to come.
    forwarding: usize,
    block: Option<Block>,
    /// Deciding: the raw frames of the first header block so far.
    held: Vec<u8>,
    decoder: Decoder,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self {
            mode: Mode::Deciding,
            input: Vec::new(),
            output: Vec::new(),
            output_at: 0,
            preface_seen: false,
            forwarding: 0,
            block: None,
            held: Vec::new(),
            decoder: Decoder::new(HEADER_TABLE_SIZE),
        }
    }
}

impl AuthorityFix {
    /// Nothing to rewrite or hand over any more: h2 may read the socket itself.
    pub fn bypassed(&self) -> bool {
        self.mode == Mode::Passing && self.output_at == self.output.len()
    }

    /// Takes bytes the peer sent. An error means a connection in rewriting
    /// mode sent a header block it cannot decode (h2 would close it too).
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.mode == Mode::Passing {
            self.output.extend_from_slice(bytes);
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        self.parse()
    }

    /// The peer closed its side: what is left goes to h2 as it came.
    pub fn finish(&mut self) {
        if self.mode == Mode::Deciding {
            self.pass_through();
        }
        let rest = std::mem::take(&mut self.input);
        self.output.extend_from_slice(&rest);
    }

    /// Copies what is ready into @out; returns how many bytes.
    pub fn read_into(&mut self, out: &mut [u8]) -> usize {
        let ready = &self.output[self.output_at..];
        let n = ready.len().min(out.len());
        out[..n].copy_from_slice(&ready[..n]);
        self.output_at += n;
        if self.output_at == self.output.len() {
            self.output.clear();
            self.output_at = 0;
        }
        n
    }

    /// How many bytes are ready for h2.
    pub fn ready_len(&self) -> usize {
        self.output.len() - self.output_at
    }

    fn parse(&mut self) -> io::Result<()> {
        while self.mode != Mode::Passing {
            if !self.preface_seen {
                if self.input.len() < PREFACE.len() {
                    return Ok(());
                }
                if &self.input[..PREFACE.len()] != PREFACE {
                    return self.fail("no HTTP/2 preface");
                }
                self.forward(PREFACE.len());
                self.preface_seen = true;
            } else if self.forwarding > 0 {
                let n = self.forwarding.min(self.input.len());
                if n == 0 {
                    return Ok(());
                }
                self.forward(n);
                self.forwarding -= n;
            } else if self.input.len() < FRAME_HEADER_BYTES {
                return Ok(());
            } else {
                let header = FrameHeader::parse(&self.input);
                let is_block = header.kind == HEADERS || header.kind == CONTINUATION;
                if !is_block && self.block.is_some() {
                    return self.fail("a frame inside a header block");
                }
                if !is_block {
                    self.forward(FRAME_HEADER_BYTES);
                    self.forwarding = header.length;
                    continue;
                }
                if header.length > MAX_BLOCK_BYTES {
                    return self.fail("a header frame too large to buffer");
                }
                if self.input.len() < FRAME_HEADER_BYTES + header.length {
                    return Ok(());
                }
                let frame: Vec<u8> = self
                    .input
                    .drain(..FRAME_HEADER_BYTES + header.length)
                    .collect();
                self.header_frame(header, &frame)?;
            }
        }
        let rest = std::mem::take(&mut self.input);
        self.output.extend_from_slice(&rest);
        Ok(())
    }

    /// Moves @n input bytes to the output unchanged.
    fn forward(&mut self, n: usize) {
        self.output.extend(self.input.drain(..n));
    }

    fn header_frame(&mut self, header: FrameHeader, frame: &[u8]) -> io::Result<()> {
        if self.mode == Mode::Deciding {
            self.held.extend_from_slice(frame);
        }
        let payload = &frame[FRAME_HEADER_BYTES..];
        let in_sequence = match (header.kind, self.block.as_mut()) {
            (HEADERS, None) => match headers_fragment(header.flags, payload) {
                Some(fragment) => {
                    self.block = Some(Block {
                        stream: header.stream,
                        end_stream: header.flags & END_STREAM != 0,
                        fragment: fragment.to_vec(),
                    });
                    true
                }
                None => false,
            },
            (CONTINUATION, Some(block)) if block.stream == header.stream => {
                block.fragment.extend_from_slice(payload);
                true
            }
            _ => false,
        };
        if !in_sequence {
            return self.fail("a header frame that is malformed or out of sequence");
        }
        if self
            .block
            .as_ref()
            .is_some_and(|b| b.fragment.len() > MAX_BLOCK_BYTES)
        {
            return self.fail("a header block too large to buffer");
        }
        if header.flags & END_HEADERS != 0 {
            return self.finish_block();
        }
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let fields = match self.decoder.decode(&block.fragment) {
            Ok(fields) => fields,
            Err(error) => {
                return self.fail(&format!("a header block HPACK cannot decode: {error}"))
            }
        };
        if self.mode == Mode::Deciding {
            let Some(authority) = refused_authority(&fields) else {
                self.pass_through();
                return Ok(());
            };
            tracing::debug!(
                authority = %String::from_utf8_lossy(authority),
                "the peer's :authority is no host (a Unix socket path); its requests are \
                 passed on with :authority localhost"
            );
            self.held.clear();
            self.mode = Mode::Rewriting;
        }
        self.write_block(block.stream, block.end_stream, &with_localhost(fields));
        Ok(())
    }

    /// @fields as a HEADERS frame and CONTINUATION frames, none larger than
    /// any peer accepts.
    fn write_block(&mut self, stream: u32, end_stream: bool, fields: &[Field]) {
        let mut block = Vec::new();
        hpack::encode_literals(fields, &mut block);
        let chunks: Vec<&[u8]> = if block.is_empty() {
            vec![&[]]
        } else {
            block.chunks(MAX_FRAME_PAYLOAD).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let mut flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            if i == 0 && end_stream {
                flags |= END_STREAM;
            }
            FrameHeader::write(chunk.len(), kind, flags, stream, &mut self.output);
            self.output.extend_from_slice(chunk);
        }
    }

    /// Deciding: h2 reads the connection as the peer sent it from now on,
    /// starting with what is held and what is not parsed yet.
    fn pass_through(&mut self) {
        let held = std::mem::take(&mut self.held);
        let rest = std::mem::take(&mut self.input);
        self.output.extend_from_slice(&held);
        self.output.extend_from_slice(&rest);
        self.block = None; // its raw frames were held
        self.mode = Mode::Passing;
    }

    /// Something this does not understand: while deciding, h2 gets the
    /// bytes as they came and judges them; while rewriting, h2's decoder
    /// no longer matches the peer's encoder, so the connection ends here.
    fn fail(&mut self, why: &str) -> io::Result<()> {
        if self.mode == Mode::Deciding {
            self.pass_through();
            return Ok(());
        }
        tracing::debug!(
            why,
            "closing a connection whose header blocks are rewritten"
        );
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent {why}"),
        ))
    }
}

/// The header block fragment of a HEADERS frame's payload: without its pad
/// length, priority fields and padding.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end)
}

/// The value of an `:authority` h2 would refuse, if the block has one.
fn refused_authority(fields: &[Field]) -> Option<&[u8]> {
    fields
        .iter()
        .find(|f| f.name == b":authority" && !acceptable(&f.value))
        .map(|f| f.value.as_slice())
}

/// What h2 checks: that the value parses as a URI authority.
fn acceptable(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

fn with_localhost(mut fields: Vec<Field>) -> Vec<Field> {
    for field in &mut fields {
        if field.name == b":authority" && !acceptable(&field.value) {
            field.value = LOCALHOST.to_vec();
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader::write(payload.len(), kind, flags, stream, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            sensitive: false,
        }
    }

    fn request(authority: &str, path: &str) -> Vec<Field> {
        vec![
            field(":method", "POST"),
            field(":scheme", "http"),
            field(":path", path),
            field(":authority", authority),
            field("content-type", "application/grpc"),
        ]
    }

    /// A block as a client's encoder indexes it: every field with
    /// incremental indexing the first time, by index afterwards.
    fn indexed_block(fields: &[Field], first: bool) -> Vec<u8> {
        let mut block = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if first {
                block.push(0x40);
                block.push(f.name.len() as u8);
                block.extend_from_slice(&f.name);
                block.push(f.value.len() as u8);
                block.extend_from_slice(&f.value);
            } else {
                // Newest first: the last field inserted is index 62.
                block.push(0x80 | (62 + fields.len() - 1 - i) as u8);
            }
        }
        block
    }

    /// Everything @fix hands to h2, fed @bytes in pieces of @step.
    fn through(fix: &mut AuthorityFix, bytes: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            fix.feed(piece).expect("feeds");
            let mut buf = [0u8; 7];
            loop {
                let n = fix.read_into(&mut buf);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        out
    }

    /// The header blocks in @bytes (after the preface), decoded as h2 would.
    fn blocks_seen_by_h2(bytes: &[u8]) -> Vec<(u8, Vec<Field>)> {
        let mut decoder = Decoder::new(HEADER_TABLE_SIZE);
        let mut at = PREFACE.len();
        let mut blocks = Vec::new();
        let mut pending = Vec::new();
        let mut flags0 = 0;
        while at < bytes.len() {
            let h = FrameHeader::parse(&bytes[at..]);
            let payload = &bytes[at + 9..at + 9 + h.length];
            if h.kind == HEADERS {
                pending = headers_fragment(h.flags, payload)
                    .expect("fragment")
                    .to_vec();
                flags0 = h.flags;
            } else if h.kind == CONTINUATION {
                pending.extend_from_slice(payload);
            }
            if (h.kind == HEADERS || h.kind == CONTINUATION) && h.flags & END_HEADERS != 0 {
                blocks.push((
                    flags0 & END_STREAM,
                    decoder.decode(&pending).expect("decodes"),
                ));
            }
            at += 9 + h.length;
        }
        blocks
    }

    const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

    #[test]
    fn a_host_authority_passes_untouched_and_then_bypasses() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&SETTINGS);
        let fields = request("localhost", "/finderd.v1.Finder/Stats");
        bytes.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &indexed_block(&fields, true),
        ));
        bytes.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        let mut fix = AuthorityFix::default();
        assert_eq!(through(&mut fix, &bytes, 3), bytes);
        assert!(fix.bypassed());
    }

    #[test]
    fn a_socket_path_authority_is_rewritten_in_every_block_with_the_table_followed() {
        let path = "tmp%2Frc1%2Ffinderd.sock";
        let first = request(path, "/grpc.health.v1.Health/Check");
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&SETTINGS);
        bytes.extend(frame(HEADERS, END_HEADERS, 1, &indexed_block(&first, true)));
        bytes.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        // The second request refers to the first one's table entries, and
        // comes as HEADERS (padded, with priority) plus a CONTINUATION.
        let second = indexed_block(&first, false);
        let mut payload = vec![2u8, 0, 0, 0, 0, 16];
        payload.extend_from_slice(&second[..2]);
        payload.extend_from_slice(&[0, 0]);
        bytes.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 3, &second[2..]));
        let mut fix = AuthorityFix::default();
        let out = through(&mut fix, &bytes, 5);
        assert!(!fix.bypassed());
        let want = with_localhost(first.clone());
        assert_eq!(want[3], field(":authority", "localhost"));
        assert_eq!(
            blocks_seen_by_h2(&out),
            vec![(0, want.clone()), (END_STREAM, want)]
        );
        // The DATA frame between them passed unchanged.
        let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
        assert!(out.windows(data.len()).any(|w| w == data.as_slice()));
    }

    #[test]
    fn a_block_larger_than_a_frame_is_split_into_continuations() {
        let mut fields = request("/run/finderd/finderd.sock", "/finderd.v1.Finder/Stats");
        fields.push(field("x-big", &"v".repeat(40_000)));
        let mut block = Vec::new();
        hpack::encode_literals(&fields, &mut block);
        let mut bytes = PREFACE.to_vec();
        for (i, chunk) in block.chunks(10_000).enumerate() {
            let last = (i + 1) * 10_000 >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            bytes.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let mut fix = AuthorityFix::default();
        let out = through(&mut fix, &bytes, 4096);
        let mut at = PREFACE.len();
        while at < out.len() {
            let h = FrameHeader::parse(&out[at..]);
            assert!(h.length <= MAX_FRAME_PAYLOAD);
            at += 9 + h.length;
        }
        assert_eq!(blocks_seen_by_h2(&out), vec![(0, with_localhost(fields))]);
    }

    #[test]
    fn what_it_cannot_read_while_deciding_reaches_h2_as_it_came() {
        for bytes in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            [PREFACE, &frame(HEADERS, END_HEADERS, 1, &[0x80])].concat(),
            [PREFACE, &frame(HEADERS, 0, 1, &[0x82]), &SETTINGS].concat(),
        ] {
            let mut fix = AuthorityFix::default();
            let mut out = through(&mut fix, &bytes, 2);
            fix.finish();
            let mut buf = vec![0u8; bytes.len()];
            let n = fix.read_into(&mut buf);
            out.extend_from_slice(&buf[..n]);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn a_rewritten_connection_that_breaks_hpack_is_closed() {
        let first = request("/tmp/x.sock", "/p");
        let bytes = [
            PREFACE,
            &frame(HEADERS, END_HEADERS, 1, &indexed_block(&first, true)),
            &frame(HEADERS, END_HEADERS, 3, &[0xff, 0x00]),
        ]
        .concat();
        let mut fix = AuthorityFix::default();
        fix.feed(&bytes[..bytes.len() - 11])
            .expect("the first block is fine");
        let error = fix
            .feed(&bytes[bytes.len() - 11..])
            .expect_err("an index past the table");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
