//! Reading a program's output line by line, with a limit: a program that
//! writes a 100 MB line gets an error that names the limit, not a worker
//! that holds the line in memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine {
    /// A line, without its `\n`.
    Line,
    /// A line longer than the limit; its bytes were skipped to its end.
    TooLong,
    /// The stream ended.
    End,
}

/// Reads the next line into `line` (cleared first), at most `limit` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<ReadLine> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if too_long {
                ReadLine::TooLong
            } else if line.is_empty() {
                ReadLine::End
            } else {
                ReadLine::Line
            });
        }
        let (chunk, found) = match available.iter().position(|&byte| byte == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() > limit {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                ReadLine::TooLong
            } else {
                ReadLine::Line
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_past_the_limit_are_skipped_and_said() {
        let input = b"short\nthis one is far too long\nok\nlast";
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            match read_line(&mut reader, &mut line, 10).await.unwrap() {
                ReadLine::End => break,
                ReadLine::TooLong => seen.push("<too long>".to_owned()),
                ReadLine::Line => seen.push(String::from_utf8(line.clone()).unwrap()),
            }
        }
        assert_eq!(seen, ["short", "<too long>", "ok", "last"]);
    }
}
