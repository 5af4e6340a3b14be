//! Single-precision matrix products through the BLAS inside libtorch (MKL's `sgemm_`, which the
//! x86-64 libtorch builds export), called directly on slices.
//!
//! For the attention of one head — products of 128 × 32 and 128 × 128 matrices — a libtorch
//! operation costs microseconds of dispatch and needs its operands as tensors; through `sgemm_`
//! the heads' q, k and v are read where they lie in the (N, 3C) projection, with a leading
//! dimension, and no copy into heads is made. The symbol is looked up at run time, so a libtorch
//! without it (another BLAS, another platform) still links, and callers fall back to libtorch.

use std::ffi::{c_char, c_int};
use std::sync::OnceLock;

/// `sgemm_`'s Fortran signature (LP64: 32-bit integers, everything by pointer).
type Sgemm = unsafe extern "C" fn(
    transa: *const c_char,
    transb: *const c_char,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f32,
    a: *const f32,
    lda: *const c_int,
    b: *const f32,
    ldb: *const c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: *const c_int,
);

/// The address of the function `name` in the loaded libraries (libtorch_cpu is linked into the
/// binary), if one exports it.
pub(super) fn symbol(name: &std::ffi::CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with a NUL-terminated name only looks the name up.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

fn sgemm() -> Option<Sgemm> {
    static SGEMM: OnceLock<Option<Sgemm>> = OnceLock::new();
    *SGEMM.get_or_init(|| {
        // SAFETY: the address of the function of that name, whose signature is the BLAS
        // standard's.
        symbol(c"sgemm_").map(|f| unsafe { std::mem::transmute::<*mut libc::c_void, Sgemm>(f) })
    })
}

/// Whether [`gemm`] can run: the loaded libtorch exports a BLAS `sgemm_`.
pub(super) fn available() -> bool {
    sgemm().is_some()
}

/// A row-major matrix operand: `rows` × `cols` (after `transposed`), stored row by row `ld`
/// floats apart from the start of `data`.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub transposed: bool,
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        Matrix { data, ld, transposed: false }
    }

    pub fn t(self) -> Self {
        Matrix { transposed: !self.transposed, ..self }
    }
}

/// Floats a row-major `rows` × `cols` matrix with leading dimension `ld` spans.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    assert!(cols <= ld, "a leading dimension {ld} shorter than a row of {cols}");
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `c = a · b` for the row-major `m` × `k` `a` and `k` × `n` `b`, into the `m` × `n` `c` with
/// leading dimension `ldc`. Panics without a BLAS ([`available`]) or where a slice is short.
pub(super) fn gemm(m: usize, n: usize, k: usize, a: Matrix, b: Matrix, c: &mut [f32], ldc: usize) {
    product(m, n, k, a, b, 0.0, c, ldc)
}

/// [`gemm`] adding `a · b` to what `c` holds.
pub(super) fn gemm_add(
    m: usize,
    n: usize,
    k: usize,
    a: Matrix,
    b: Matrix,
    c: &mut [f32],
    ldc: usize,
) {
    product(m, n, k, a, b, 1.0, c, ldc)
}

/// `c = a · b + beta · c`, as [`gemm`].
#[allow(clippy::too_many_arguments)] // BLAS's own
fn product(
    m: usize,
    n: usize,
    k: usize,
    a: Matrix,
    b: Matrix,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let stored = |x: &Matrix, rows, cols| if x.transposed { (cols, rows) } else { (rows, cols) };
    let (ar, ac) = stored(&a, m, k);
    let (br, bc) = stored(&b, k, n);
    assert!(a.data.len() >= span(ar, ac, a.ld), "a is shorter than {ar} × {ac}");
    assert!(b.data.len() >= span(br, bc, b.ld), "b is shorter than {br} × {bc}");
    assert!(c.len() >= span(m, n, ldc), "c is shorter than {m} × {n}");
    let sgemm = sgemm().expect("a BLAS sgemm_ in the loaded libtorch");
    let int = |x: usize| c_int::try_from(x).expect("a matrix dimension that fits a C int");
    let flag = |x: &Matrix| if x.transposed { b'T' as c_char } else { b'N' as c_char };
    let (m, n, k) = (int(m), int(n), int(k));
    let (lda, ldb, ldc) = (int(a.ld.max(1)), int(b.ld.max(1)), int(ldc.max(1)));
    let alpha = 1f32;
    // Column-major BLAS sees a row-major matrix as its transpose, so the row-major c = a · b is
    // the column-major cᵀ = bᵀ · aᵀ: the operands swap.
    // SAFETY: the slices cover what the dimensions and leading dimensions address (asserted),
    // `c` is exclusively borrowed, and sgemm_ reads and writes nothing else.
    unsafe {
        sgemm(
            &flag(&b),
            &flag(&a),
            &n,
            &m,
            &k,
            &alpha,
            b.data.as_ptr(),
            &ldb,
            a.data.as_ptr(),
            &lda,
            &beta,
            c.as_mut_ptr(),
            &ldc,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// Against libtorch's `mm`, with every transposition and operands inside wider rows.
    #[test]
    fn gemm_matches_libtorch_with_leading_dimensions_and_transposes() {
        if !available() {
            eprintln!("no sgemm_ in this libtorch: nothing to test");
            return;
        }
        let (m, n, k, ld) = (7usize, 5usize, 9usize, 12usize);
        let opts = (Kind::Float, Device::Cpu);
        let (m_, n_, k_, ld_) = (m as i64, n as i64, k as i64, ld as i64);
        let a_wide = Tensor::randn([k_, ld_], opts);
        let b_wide = Tensor::randn([k_, ld_], opts);
        let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let (av, bv) = (values(&a_wide), values(&b_wide));
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // a's stored rows start at column 2 of a_wide, b's at column 1 of b_wide.
            let a = match ta {
                true => a_wide.narrow(0, 0, k_).narrow(1, 2, m_).tr(),
                false => a_wide.narrow(0, 0, m_).narrow(1, 2, k_),
            };
            let b = match tb {
                true => b_wide.narrow(0, 0, n_).narrow(1, 1, k_).tr(),
                false => b_wide.narrow(0, 0, k_).narrow(1, 1, n_),
            };
            let expected = a.mm(&b);
            let mut c = vec![f32::NAN; m * 8];
            let (mut am, mut bm) = (Matrix::new(&av[2..], ld), Matrix::new(&bv[1..], ld));
            if ta {
                am = am.t();
            }
            if tb {
                bm = bm.t();
            }
            gemm(m, n, k, am, bm, &mut c, 8);
            let ours = Tensor::from_slice(&c).view([m_, 8]).narrow(1, 0, n_);
            assert!(ours.allclose(&expected, 1e-5, 1e-5, false), "transposed a {ta}, b {tb}");
            assert!(c.chunks(8).all(|row| row[n..].iter().all(|x| x.is_nan())), "past n untouched");
            gemm_add(m, n, k, am, bm, &mut c, 8);
            let twice = Tensor::from_slice(&c).view([m_, 8]).narrow(1, 0, n_);
            assert!(twice.allclose(&(&expected * 2.0), 1e-5, 1e-5, false), "added, {ta}, {tb}");
        }
    }
}
