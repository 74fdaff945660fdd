//! `--chmod` modes.

/// `--chmod`: an octal mode, or symbolic clauses as chmod(1) writes them
/// (`u+x`, `go-w`, `a=rX`, `u=rwx,g=rx,o=`), applied to each copied file's
/// own mode (`X`: execute only for directories and already-executable files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<(u32, char, u32, bool)>),
}

impl Chmod {
    pub(crate) fn parse(s: &str) -> std::result::Result<Chmod, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_digit(8)) {
            let m = u32::from_str_radix(s, 8).map_err(|e| e.to_string())?;
            if m > 0o7777 {
                return Err("mode out of range".into());
            }
            return Ok(Chmod::Octal(m));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let who_end = clause.find(['+', '-', '=']).ok_or_else(|| {
                format!("{clause:?}: expected an octal mode or [ugoa][+-=][rwxXst]")
            })?;
            let mut who = 0u32;
            for c in clause[..who_end].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(format!("{clause:?}: unknown who {c:?}")),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            // Several operators may follow one who: `u+x-w`.
            let mut rest = &clause[who_end..];
            while let Some(op) = rest.chars().next() {
                let perms_end = rest[1..]
                    .find(['+', '-', '='])
                    .map_or(rest.len(), |i| i + 1);
                let mut bits = 0u32;
                let mut cond_x = false;
                for c in rest[1..perms_end].chars() {
                    bits |= match c {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' => {
                            cond_x = true;
                            0
                        }
                        's' => 0o6000,
                        't' => 0o1000,
                        _ => return Err(format!("{clause:?}: unknown permission {c:?}")),
                    };
                }
                clauses.push((who, op, bits, cond_x));
                rest = &rest[perms_end..];
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for &(who, op, bits, cond_x) in clauses {
                    let mut b = bits;
                    if cond_x && (is_dir || m & 0o111 != 0) {
                        b |= 0o111;
                    }
                    let b = b & who;
                    m = match op {
                        '+' => m | b,
                        '-' => m & !b,
                        // `=` clears what `who` covers (special bits too) first.
                        _ => (m & !(who & 0o7777)) | b,
                    };
                }
                m
            }
        }
    }
}

/// The mode of a directory COPY/ADD creates on the way to its destination:
/// 0755, or an octal `--chmod`'s permission bits (special bits dropped) less
/// the umask 022, as BuildKit's `MkdirAll` makes them (fsutil's copy passes
/// the octal mode to `os.Mkdir`, in dockerd whose umask is 022). A symbolic
/// `--chmod` leaves them 0755.
pub(super) fn created_dir_mode(chmod: Option<&Chmod>) -> u32 {
    match chmod {
        Some(Chmod::Octal(m)) => m & 0o777 & !0o022,
        _ => 0o755,
    }
}

#[cfg(test)]
mod chmod_tests {
    use super::Chmod;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    // Expected values are what chmod(1) gives for the same mode and clause.
    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o750, false), 0o555);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o777, false), 0o750);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+x-w", 0o644, false), 0o544);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in ["u+q", "z+x", "rwx", "", "99999"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }
}
