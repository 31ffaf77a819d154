//! The reader thread of `caravan ingest`: opens each input in turn (a file or
//! standard input; gzip recognised by its first bytes, whatever the name),
//! tells JSON Lines from Comtrade CSV, and cuts the text into numbered chunks
//! of whole lines (JSON Lines) or whole records (CSV: a line break inside a
//! quoted field does not end a record) for the parser threads.
//!
//! Depends on the Comtrade header reader and flate2; never on the network.

use super::super::comtrade::{self, Columns};
use super::{Format, Rejection, Tally};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The longest line (or CSV record) read: a longer one is rejected with its
/// line number and skipped, never held whole.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// What a chunk holds.
#[derive(Clone)]
pub(crate) enum Kind {
    Jsonl,
    Comtrade(Arc<Columns>),
}

/// Whole lines or records of one input, in order.
pub(crate) struct Chunk {
    /// Index of the input in the command line.
    pub(crate) file: u32,
    /// Line number (from 1) of the chunk's first line.
    pub(crate) first_line: u64,
    pub(crate) kind: Kind,
    pub(crate) bytes: Vec<u8>,
}

/// Counts the bytes read from the file itself (compressed, for gzip), for
/// the progress bar's share of the input done.
struct Counted<R> {
    inner: R,
    tally: Arc<Tally>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The inputs' total size in bytes, when every one is a regular file.
pub(crate) fn total_bytes(paths: &[String]) -> Option<u64> {
    paths
        .iter()
        .map(|p| (p != "-").then(|| std::fs::metadata(p).ok().map(|m| m.len()))?)
        .sum()
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const BUFFER: usize = 256 * 1024;

/// Opens `path` (`-`: standard input) as text: gunzipped when its first two
/// bytes are gzip's (concatenated gzip members are read as one text).
fn open(path: &str, tally: &Arc<Tally>) -> Result<Box<dyn BufRead + Send>, String> {
    let raw: Box<dyn Read + Send> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?)
    };
    let mut counted = BufReader::with_capacity(
        BUFFER,
        Counted {
            inner: raw,
            tally: Arc::clone(tally),
        },
    );
    let head = counted.fill_buf().map_err(|e| format!("{path}: {e}"))?;
    if head.starts_with(&GZIP_MAGIC) {
        let text = flate2::bufread::MultiGzDecoder::new(counted);
        Ok(Box::new(BufReader::with_capacity(BUFFER, text)))
    } else {
        Ok(Box::new(counted))
    }
}

/// How one line read ended.
enum Line {
    End,
    Read,
    TooLong,
}

/// Appends one line (with its `\n`) to `buf`, holding at most
/// `MAX_LINE_BYTES` of it; the rest of a longer line is skipped.
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    let start = buf.len();
    let n = Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if n > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
        buf.truncate(start);
        reader.skip_until(b'\n')?;
        return Ok(Line::TooLong);
    }
    Ok(Line::Read)
}

/// Reads every input in order and hands `emit` its chunks of about
/// `chunk_records` lines or records. Stops at the first input that cannot be
/// read (the chunks before it are handed on) or when `emit` says so.
pub(crate) fn read_all(
    paths: &[String],
    format: Format,
    chunk_records: usize,
    tally: &Arc<Tally>,
    mut emit: impl FnMut(Chunk) -> Result<(), ()>,
) -> Result<(), String> {
    for (index, path) in paths.iter().enumerate() {
        let name = if path == "-" {
            "<stdin>"
        } else {
            path.as_str()
        };
        let file = u32::try_from(index).map_err(|_| "too many inputs".to_owned())?;
        let mut reader = open(path, tally)?;
        let fail = |e: std::io::Error| format!("{name}: {e}");
        // A byte-order mark before the first line is not text.
        if reader
            .fill_buf()
            .map_err(fail)?
            .starts_with(b"\xef\xbb\xbf")
        {
            reader.consume(3);
        }
        let head = reader.fill_buf().map_err(fail)?;
        let looks_json = head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let kind = match format {
            Format::Auto if looks_json => Kind::Jsonl,
            Format::Jsonl => Kind::Jsonl,
            Format::Auto | Format::Comtrade => {
                let mut header = Vec::new();
                let mut line = 1;
                if !read_record(&mut *reader, &mut header, &mut line).map_err(fail)? {
                    continue; // empty input
                }
                let columns = comtrade_columns(&header).map_err(|e| format!("{name}: {e}"))?;
                let kind = Kind::Comtrade(Arc::new(columns));
                read_chunks(
                    &mut *reader,
                    file,
                    kind,
                    line,
                    chunk_records,
                    tally,
                    &mut emit,
                )
                .map_err(fail)?;
                continue;
            }
        };
        read_chunks(&mut *reader, file, kind, 1, chunk_records, tally, &mut emit).map_err(fail)?;
    }
    Ok(())
}

/// Columns from a header record, or why it is not a Comtrade header.
fn comtrade_columns(header: &[u8]) -> Result<Columns, String> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(header);
    let mut record = csv::ByteRecord::new();
    let fields: Vec<String> = match csv.read_byte_record(&mut record) {
        Ok(true) => record.iter().map(comtrade::text).collect(),
        Ok(false) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    if !comtrade::is_comtrade_header(&fields) {
        return Err("neither JSON Lines nor a UN Comtrade CSV header (use --format)".into());
    }
    Columns::from_header(&fields)
}

/// Appends one CSV record (one or more lines, a quoted field may hold line
/// breaks) to `buf`; `line` moves past it. False at the end of the input.
fn read_record(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    line: &mut u64,
) -> std::io::Result<bool> {
    let start = buf.len();
    let mut open_quote = false;
    loop {
        let from = buf.len();
        match read_line(reader, buf)? {
            Line::End => return Ok(buf.len() > start),
            Line::TooLong => {
                return Err(std::io::Error::other(format!(
                    "line {line} is longer than {MAX_LINE_BYTES} bytes"
                )))
            }
            Line::Read => {}
        }
        *line += 1;
        // RFC 4180: a line break ends the record unless a quoted field is
        // open; `""` inside quotes counts twice and changes nothing.
        let quotes = buf[from..].iter().filter(|&&b| b == b'"').count();
        open_quote ^= quotes % 2 == 1;
        if !open_quote {
            return Ok(true);
        }
        if buf.len() - start > MAX_LINE_BYTES {
            return Err(std::io::Error::other(format!(
                "a quoted field from line {} runs past {MAX_LINE_BYTES} bytes (an unclosed quote?)",
                *line - 1
            )));
        }
    }
}

fn read_chunks(
    reader: &mut dyn BufRead,
    file: u32,
    kind: Kind,
    mut line: u64,
    chunk_records: usize,
    tally: &Arc<Tally>,
    emit: &mut impl FnMut(Chunk) -> Result<(), ()>,
) -> std::io::Result<()> {
    let mut more = true;
    while more {
        let first_line = line;
        let mut bytes = Vec::with_capacity(chunk_records * 256);
        let mut records = 0;
        while records < chunk_records {
            let read = match kind {
                Kind::Jsonl => {
                    let read = match read_line(reader, &mut bytes)? {
                        Line::End => false,
                        Line::Read => true,
                        Line::TooLong => {
                            // Keep the numbering: an empty line stands in for it.
                            tally.reject(Rejection {
                                file,
                                line,
                                reason: format!("longer than {MAX_LINE_BYTES} bytes: skipped"),
                            });
                            bytes.push(b'\n');
                            true
                        }
                    };
                    line += u64::from(read);
                    read
                }
                Kind::Comtrade(_) => read_record(reader, &mut bytes, &mut line)?,
            };
            if !read {
                more = false;
                break;
            }
            records += 1;
        }
        if records > 0
            && emit(Chunk {
                file,
                first_line,
                kind: kind.clone(),
                bytes,
            })
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
