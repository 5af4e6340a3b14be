//! The CPU's vector units for the loops that libtorch does not run: [`vectorised!`], which
//! compiles a loop for AVX-512 beside its portable build and picks one at run time, and the
//! checks those loops share. The model's kernels, the flat all-reduce's sums and the fused
//! optimiser update all go through it; what each loop computes lives with its caller.

/// A function whose body is compiled twice: for AVX-512 (called where the CPU has it) and
/// portably. The body's loops are written to vectorise, so the AVX-512 build is the fast one.
/// It includes AVX-512DQ and VL (every AVX-512 server CPU since Skylake has them) for the 64-bit
/// multiplies of the dropout generator.
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
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { avx512($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use vectorised;

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
