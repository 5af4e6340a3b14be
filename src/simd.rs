//! The CPU's vector units for the loops that libtorch does not run: [`vectorised!`], which
//! compiles a loop for AVX-512 and AVX2 beside its portable build and picks one at run time,
//! and the checks those loops share. The model's kernels, the flat all-reduce's sums and the
//! dropout generator go through it; what each loop computes lives with its caller.

/// A function whose body is compiled three times: for AVX-512 and for AVX2 with FMA (each called
/// where the CPU has it) and portably (SSE2). The body's loops are written to vectorise, so the
/// wider builds are the fast ones; none lets the compiler reorder or contract float arithmetic,
/// so the three give the same results bit for bit. The AVX-512 build includes DQ and VL (every
/// AVX-512 server CPU since Skylake has them) for the 64-bit multiplies of the dropout generator.
macro_rules! vectorised {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            match $crate::simd::level() {
                // SAFETY: the CPU has the features each function is compiled for.
                $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::simd::Level::Portable => {}
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use vectorised;

/// A build of a [`vectorised!`] function, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Portable,
    Avx2,
    Avx512,
}

impl Level {
    /// As [`SIMD_VAR`] and run.json name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// Caps the build the [`vectorised!`] functions run (`portable`, `avx2`, `avx512`), to compare
/// them on one machine; a cap above what the CPU has changes nothing.
pub(crate) const SIMD_VAR: &str = "DP_BENCH_SIMD";

/// The widest build this CPU runs.
pub(crate) fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512vl") {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

/// [`SIMD_VAR`]'s cap, if set; an unknown value is an error naming the ones it takes.
pub(crate) fn requested() -> Result<Option<Level>, String> {
    let Some(value) = std::env::var_os(SIMD_VAR) else { return Ok(None) };
    let levels = [Level::Portable, Level::Avx2, Level::Avx512];
    match levels.into_iter().find(|l| value.to_str() == Some(l.name())) {
        Some(level) => Ok(Some(level)),
        None => {
            Err(format!("{SIMD_VAR}={value:?}: use portable, avx2 or avx512 (or leave it unset)"))
        }
    }
}

/// The build the [`vectorised!`] functions run: the CPU's widest, capped by [`SIMD_VAR`];
/// decided once.
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cpu = detected();
        requested().ok().flatten().map_or(cpu, |cap| cap.min(cpu))
    })
}

/// The CPU feature that executes bf16 matrix products in hardware, where this CPU has one and the
/// operating system keeps its registers: AMX-BF16 (Sapphire Rapids and later; oneDNN's tile
/// kernels) before AVX512-BF16 (Cooper Lake, Zen 4; dot products of bf16 pairs). Without either,
/// libtorch emulates bf16 products in fp32 at a fraction of fp32's own speed.
pub(crate) fn bf16_products() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // Leaf 7 is read only where leaf 0 lists it.
        let (max_leaf, leaf1) = (__cpuid(0).eax, __cpuid(1));
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        if max_leaf < 7 || !osxsave {
            return None;
        }
        // SAFETY: OSXSAVE is set, so xgetbv(0) reads XCR0, the register state the OS saves.
        let xcr0 = unsafe { std::arch::x86_64::_xgetbv(0) };
        let (leaf7, leaf7_1) = (__cpuid_count(7, 0), __cpuid_count(7, 1));
        let avx512_state = xcr0 & 0xe6 == 0xe6; // SSE, AVX, opmask, ZMM halves
        let tile_state = xcr0 & (3 << 17) == 3 << 17; // XTILECFG, XTILEDATA
        if leaf7.edx & (1 << 22) != 0 && tile_state {
            return Some("AMX-BF16");
        }
        if leaf7_1.eax & (1 << 5) != 0 && avx512_state {
            return Some("AVX512-BF16");
        }
    }
    None
}

/// Whether no element of `x` is a NaN or an infinity: their exponent bits are all ones. The
/// largest exponent over 16 independent lanes, so the loop vectorises (inlined into the
/// [`vectorised!`] loops that call it).
#[inline(always)]
pub(crate) fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let mut lanes = [0u32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0, |m, v| m.max(v.to_bits() & EXPONENT));
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(v.to_bits() & EXPONENT);
        }
    }
    lanes.iter().fold(tail, |m, &l| m.max(l)) != EXPONENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_any_nan_or_infinity_at_any_place() {
        for len in [0, 1, 15, 16, 17, 100] {
            let ok: Vec<f32> = (0..len).map(|i| (i as f32 - 50.0) * 1e36).collect();
            assert!(all_finite(&ok), "len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in 0..len {
                    let mut x = ok.clone();
                    x[at] = bad;
                    assert!(!all_finite(&x), "{bad} at {at} of {len}");
                }
            }
        }
        assert!(all_finite(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45]));
    }
}
