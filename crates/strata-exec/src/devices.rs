//! Which device nodes a step may use, as rules and as the eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) that enforces them on the step's cgroup
//! (see [`crate::cgroup`], which loads and attaches it). A leaf: no
//! syscalls, only the rules and their encoding.
//!
//! The rules are runc's: `AllowedDevices` in runc's
//! `libcontainer/specconv/spec_linux.go`, which every Docker and BuildKit
//! container gets (mknod of any character or block device; read, write and
//! mknod of null, zero, full, random, urandom, tty, ptmx, the pts range
//! 136:* and tun 10:200), plus `/dev/console` (5:1), which runc's list had
//! until runc 1.0 (`DefaultAllowedDevices` in
//! `libcontainer/configs/device_defaults.go`). Everything else is refused:
//! opening `/dev/kmsg` (1:11), a loop device (7:*) or a disk, even where the
//! node exists and the mount allows devices.
//!
//! The program follows runc's and youki's device filters
//! (`libcontainer/cgroups/devices/devicefilter.go`,
//! `crates/libcgroups/src/v2/devices/program.rs`): load the access type,
//! major and minor from `struct bpf_cgroup_dev_ctx` into registers, then per
//! rule compare and return 1 (allow) on a match; 0 at the end. It is encoded
//! here by hand rather than with `rbpf`'s instruction builder (youki's
//! choice), which would bring an interpreter and a JIT into the one crate
//! allowed `unsafe` for the eight opcodes used; the unit tests run it through a
//! small interpreter of those opcodes, and the kernel's verifier checks it
//! again at load.

/// `BPF_DEVCG_DEV_BLOCK` and `BPF_DEVCG_DEV_CHAR` (linux/bpf.h): the low 16
/// bits of `bpf_cgroup_dev_ctx.access_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevKind {
    Block = 1,
    Char = 2,
}

/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`: the high 16 bits of
/// `access_type`, one bit per kind of access asked for.
pub(crate) const ACC_MKNOD: u32 = 1;
pub(crate) const ACC_READ: u32 = 2;
pub(crate) const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One allow rule: a device kind, major and minor (`None`: any), and the
/// accesses it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub kind: DevKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

const fn rwm(major: u32, minor: Option<u32>) -> Rule {
    Rule {
        kind: DevKind::Char,
        major: Some(major),
        minor,
        access: ACC_ALL,
    }
}

/// runc's default allow list (see the module docs), in runc's order.
pub(crate) const DEFAULT_RULES: [Rule; 12] = [
    Rule {
        kind: DevKind::Char,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule {
        kind: DevKind::Block,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    rwm(1, Some(3)),    // null
    rwm(1, Some(8)),    // random
    rwm(1, Some(7)),    // full
    rwm(5, Some(0)),    // tty
    rwm(1, Some(5)),    // zero
    rwm(1, Some(9)),    // urandom
    rwm(136, None),     // pts
    rwm(5, Some(2)),    // ptmx
    rwm(10, Some(200)), // tun (pasta opens it inside the step's cgroup)
    rwm(5, Some(1)),    // console
];

/// Whether `rules` allow `access` (a mask of `ACC_*`) to `kind`
/// `major:minor`: some rule matches the device and allows every bit asked
/// for. What the program computes, for the tests and the docs.
#[cfg(test)]
pub(crate) fn allows(rules: &[Rule], kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
    rules.iter().any(|r| {
        r.kind == kind
            && r.major.is_none_or(|m| m == major)
            && r.minor.is_none_or(|m| m == minor)
            && access & r.access == access
    })
}

// eBPF opcodes (linux/bpf_common.h, linux/bpf.h): class | op | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// One `struct bpf_insn`: opcode, destination and source registers (4 bits
/// each, destination in the low nibble), a signed 16-bit offset and a signed
/// 32-bit immediate, 8 bytes in the machine's byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The kernel's `struct bpf_insn` layout.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// The device filter for `rules`: r2 = device kind, r3 = access asked for,
/// r4 = major, r5 = minor; per rule, jump to the next rule on a mismatch,
/// else return 1; return 0 when no rule matched.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, 3, 1, 0, 0),
        Insn::new(ALU32_RSH_K, 3, 0, 0, 16),
        Insn::new(LDX_MEM_W, 4, 1, 4, 0),
        Insn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        let mut checks = vec![Insn::new(JMP_JNE_K, 2, 0, 0, rule.kind as i32)];
        if rule.access != ACC_ALL {
            // Every bit asked for must be allowed: (r3 & allowed) == r3,
            // with r1 (the context, already read) as scratch.
            checks.push(Insn::new(ALU32_MOV_X, 1, 3, 0, 0));
            checks.push(Insn::new(ALU32_AND_K, 1, 0, 0, rule.access as i32));
            checks.push(Insn::new(JMP_JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            checks.push(Insn::new(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push(Insn::new(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        let allow = [
            Insn::new(ALU32_MOV_K, 0, 0, 0, 1),
            Insn::new(JMP_EXIT, 0, 0, 0, 0),
        ];
        // A jump's offset counts from the next instruction: past the rest of
        // the checks and the two that allow.
        let n = checks.len();
        for (i, insn) in checks.iter_mut().enumerate() {
            if insn.code == JMP_JNE_K || insn.code == JMP_JNE_X {
                insn.off = (n - i - 1 + allow.len()) as i16;
            }
        }
        p.extend(checks);
        p.extend(allow);
    }
    p.push(Insn::new(ALU32_MOV_K, 0, 0, 0, 0));
    p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on a `bpf_cgroup_dev_ctx` as the kernel would, for the
    /// opcodes [`program`] uses.
    fn interpret(prog: &[Insn], kind: DevKind, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(kind as u32) | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[(i.off / 4) as usize]);
                }
                ALU32_AND_K => r[d] = u64::from(r[d] as u32 & i.imm as u32),
                ALU32_RSH_K => r[d] = u64::from((r[d] as u32) >> i.imm),
                ALU32_MOV_K => r[d] = u64::from(i.imm as u32),
                ALU32_MOV_X => r[d] = u64::from(r[s] as u32),
                JMP_JNE_K if r[d] != u64::from(i.imm as u32) => pc += i.off as usize,
                JMP_JNE_X if r[d] != r[s] => pc += i.off as usize,
                JMP_JNE_K | JMP_JNE_X => {}
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x} not expected"),
            }
        }
    }

    #[test]
    fn the_program_computes_the_rules_for_every_device_and_access() {
        let prog = program(&DEFAULT_RULES);
        for kind in [DevKind::Char, DevKind::Block] {
            for major in [0, 1, 4, 5, 7, 8, 10, 136, 254] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 4242] {
                    for access in 1..=ACC_ALL {
                        let want = allows(&DEFAULT_RULES, kind, major, minor, access);
                        let got = interpret(&prog, kind, access, major, minor);
                        assert_eq!(
                            got,
                            u64::from(want),
                            "{kind:?} {major}:{minor} access {access:#b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn runc_defaults_allow_the_harmless_nodes_only() {
        let rw = ACC_READ | ACC_WRITE;
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(allows(&DEFAULT_RULES, DevKind::Char, major, minor, rw));
        }
        assert!(allows(&DEFAULT_RULES, DevKind::Char, 136, 7, rw));
        // /dev/kmsg, /dev/mem, a loop device, a disk.
        assert!(!allows(&DEFAULT_RULES, DevKind::Char, 1, 11, ACC_READ));
        assert!(!allows(&DEFAULT_RULES, DevKind::Char, 1, 1, ACC_READ));
        assert!(!allows(&DEFAULT_RULES, DevKind::Block, 7, 0, ACC_READ));
        assert!(!allows(&DEFAULT_RULES, DevKind::Block, 8, 0, ACC_WRITE));
        // runc lets any node be made; opening it is what is refused.
        assert!(allows(&DEFAULT_RULES, DevKind::Block, 7, 0, ACC_MKNOD));
    }

    #[test]
    fn instructions_have_the_kernels_layout() {
        let i = Insn::new(JMP_JNE_X, 1, 3, 2, -1);
        let b = i.to_bytes();
        assert_eq!(b[0], 0x5d);
        assert_eq!(b[1], 0x31);
        assert_eq!(i16::from_ne_bytes([b[2], b[3]]), 2);
        assert_eq!(i32::from_ne_bytes([b[4], b[5], b[6], b[7]]), -1);
    }
}
