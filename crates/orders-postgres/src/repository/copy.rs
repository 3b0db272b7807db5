//! Binary `COPY … FROM STDIN` rows written straight into large buffers.
//!
//! tokio-postgres's `BinaryCopyInWriter` encodes each field through `dyn ToSql` and hands the
//! connection a message every 4 KiB: 28,000 channel hand-offs (and as many wake-ups and
//! `sendto`s) for 100,000 orders, about a fifth of the sink path's CPU in this process. Here
//! rows are encoded in place (the format is fixed: PostgreSQL's `COPY` binary format, every
//! field a big-endian length and its bytes) and sent [`CHUNK`] bytes at a time.

use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::SinkExt;
use orders_domain::RepositoryError;
use tokio_postgres::CopyInSink;

use crate::error::map_pg;

/// Bytes buffered before they are handed to the connection.
const CHUNK: usize = 256 * 1024;

/// The binary format's header: signature, flags (none), header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One binary COPY in progress: rows are encoded with [`Self::row`] and the field methods,
/// in the statement's column order and with its column types.
pub(super) struct CopyRows {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    what: &'static str,
}

impl CopyRows {
    /// Starts the COPY `statement` (prepared on `tx`); `what` names it in errors.
    pub(super) async fn start(
        tx: &deadpool_postgres::Transaction<'_>,
        statement: &str,
        what: &'static str,
    ) -> Result<Self, tokio_postgres::Error> {
        let stmt = tx.prepare_cached(statement).await?;
        let sink = Box::pin(tx.copy_in(&stmt).await?);
        let mut buf = BytesMut::with_capacity(CHUNK + 4096);
        buf.put_slice(HEADER);
        Ok(Self { sink, buf, what })
    }

    /// Begins a row of `fields` fields; sends the buffer first if it is full.
    pub(super) async fn row(&mut self, fields: i16) -> Result<(), tokio_postgres::Error> {
        if self.buf.len() >= CHUNK {
            let chunk = self.buf.split().freeze();
            // A whole new buffer at once: what `split` leaves is the old one's spare tail, and
            // growing from it allocates twice per chunk and copies the first half.
            self.buf.reserve(CHUNK + 4096);
            self.sink.send(chunk).await?;
        }
        self.buf.put_i16(fields);
        Ok(())
    }

    pub(super) fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// A field's raw bytes (text and json fields are their UTF-8 text in binary format).
    fn bytes(&mut self, b: &[u8]) {
        // Field lengths are i32; the domain bounds every field far below that.
        self.buf.put_i32(b.len() as i32);
        self.buf.put_slice(b);
    }

    pub(super) fn int8(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }

    pub(super) fn int4(&mut self, v: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(v);
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC. chrono's range (±262,000 years)
    /// fits in i64 microseconds from either epoch; a value beyond PostgreSQL's range is
    /// refused by its own check.
    pub(super) fn timestamptz(&mut self, t: &DateTime<Utc>) {
        self.int8(t.timestamp_micros() - PG_EPOCH_MICROS);
    }

    /// A `json` field (its text), or NULL.
    pub(super) fn json(&mut self, text: Option<&str>) {
        match text {
            Some(t) => self.text(t),
            None => self.buf.put_i32(-1),
        }
    }

    /// Ends the data and waits for PostgreSQL's verdict; returns the rows copied.
    pub(super) async fn finish(mut self) -> Result<u64, tokio_postgres::Error> {
        self.buf.put_i16(-1);
        let rest = self.buf.split().freeze();
        self.sink.send(rest).await?;
        self.sink.as_mut().finish().await
    }

    /// [`Self::finish`], errors mapped for the repository's callers.
    pub(super) async fn finish_mapped(self) -> Result<u64, RepositoryError> {
        let what = self.what;
        self.finish().await.map_err(|e| map_pg(what, e))
    }
}
