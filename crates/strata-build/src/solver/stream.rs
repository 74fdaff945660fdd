//! Streams for writing a layer: its tar goes to the blob store and, in
//! chunks, to the layer indexer on another thread.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The size of the chunks the layer writer's buffer hands on.
pub(super) const CHUNK: usize = 1 << 20;

/// A channel carrying a byte stream in chunks, holding at most `depth`
/// chunks in flight (so the memory it takes is bounded).
pub(super) fn chunk_channel(depth: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = sync_channel(depth);
    (
        ChunkSender(tx),
        ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        },
    )
}

/// The writing end of [`chunk_channel`]: each write is sent as one chunk;
/// a write fails once the reader is gone.
pub(super) struct ChunkSender(SyncSender<Vec<u8>>);

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end of [`chunk_channel`]: end of stream once every sender
/// is dropped.
pub(super) struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes everything to `first` and a copy to `second` while `second` takes
/// it: the layer indexer stops reading at the tar's end-of-archive blocks
/// (or at an error, which its own result reports), so a closed channel only
/// ends the copy.
pub(super) struct Tee<A: Write, B: Write> {
    pub(super) first: A,
    pub(super) second: Option<B>,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.first.write(buf)?;
        if let Some(second) = &mut self.second
            && second.write_all(&buf[..n]).is_err()
        {
            self.second = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.first.flush()?;
        if let Some(second) = &mut self.second
            && second.flush().is_err()
        {
            self.second = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_stream_arrives_whole_and_ends_when_the_sender_goes() {
        let (mut tx, mut rx) = chunk_channel(2);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).unwrap();
            got
        });
        for part in data.chunks(7_000) {
            tx.write_all(part).unwrap();
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_tee_keeps_writing_its_first_side_after_the_second_is_gone() {
        let (tx, rx) = chunk_channel(1);
        drop(rx);
        let mut first = Vec::new();
        let mut tee = Tee {
            first: &mut first,
            second: Some(tx),
        };
        tee.write_all(b"abc").unwrap();
        tee.write_all(b"def").unwrap();
        assert!(tee.second.is_none());
        assert_eq!(first, b"abcdef");
    }
}
