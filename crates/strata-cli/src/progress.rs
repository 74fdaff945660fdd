//! Build progress in the reference's plain style, good for CI logs:
//! `#5 [stage-0 2/4] RUN ...`, output lines prefixed by the step number,
//! `#5 DONE 0.3s`, `#5 CACHED`.

#![expect(clippy::print_stderr, reason = "progress goes to stderr")]

use strata_build::Event;

pub struct Plain {
    quiet: bool,
    last: usize,
    /// Partial output line per step, so prefixes land at line starts.
    partial: Vec<u8>,
    partial_step: usize,
}

impl Plain {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            last: 0,
            partial: Vec::new(),
            partial_step: 0,
        }
    }

    pub fn current(&self) -> usize {
        self.last
    }

    pub fn next(&mut self) -> usize {
        self.last += 1;
        self.last
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            eprintln!(
                "#{} {}",
                self.partial_step,
                String::from_utf8_lossy(&self.partial)
            );
            self.partial.clear();
        }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Step { n, name } => {
                self.flush_partial();
                self.last = self.last.max(n);
                eprintln!("#{n} {name}");
            }
            Event::Output { n, data } => {
                if self.partial_step != n {
                    self.flush_partial();
                    self.partial_step = n;
                }
                self.partial.extend_from_slice(&data);
                while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.partial.drain(..=pos).collect();
                    eprintln!("#{n} {}", String::from_utf8_lossy(&line[..line.len() - 1]));
                }
            }
            Event::Cached { n } => eprintln!("#{n} CACHED"),
            Event::Done { n, seconds } => {
                self.flush_partial();
                eprintln!("#{n} DONE {seconds:.1}s");
            }
            Event::Error { n, message } => {
                self.flush_partial();
                eprintln!("#{n} ERROR: {}", message.lines().next().unwrap_or(""));
            }
        }
    }
}
