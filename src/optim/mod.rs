//! AdamW over ONE flat parameter buffer (WORKLOAD.md: lr 1e-4, betas (0.9, 0.999), eps 1e-8,
//! weight decay 0.01 on every parameter, no schedule). The parameters become views into the
//! buffer, like the gradients in `dist::FlatGrads`, so an update is one pass over the whole model
//! (dp-bench's own on the CPU, libtorch's fused kernel on other devices) instead of a loop over
//! tensors — and its whole state (parameters, both
//! moments, step count) is three tensors and a number that a checkpoint can save and restore.
//! The rule is PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments).
//!
//! Sharded ([`AdamW::sharded`], ZeRO stage 1 within a host): the ranks of a host keep ONE copy of
//! the parameters and both moments, in memory they share, and each updates only its own segment,
//! the one whose gradient sum it computed ([`crate::dist::NodeBuffer::reduce_scatter`]). Each rank
//! then does 1/L of the update and the host holds a third of the state it would otherwise hold
//! L times; the update of each value is the same arithmetic as unsharded, so results are
//! bit-for-bit those of the replicated optimiser.

mod aten;

use crate::dist::NodeBuffer;
use crate::simd::{all_finite, vectorised};
use crate::slices::elements;
use std::ops::Range;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// WORKLOAD.md's AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn workload(lr: f64) -> Self {
        AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// The optimiser and the flat buffer its parameters live in.
pub struct AdamW {
    config: AdamWConfig,
    params: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// The step count as a one-element tensor on the buffers' device, for libtorch's fused
    /// kernel (made on its first step); the CPU's own update reads `steps`.
    step_count: Option<Tensor>,
    steps: u64,
    /// Where the state is shared by the host's ranks (sharded), the buffer that holds it.
    shard: Option<Rc<NodeBuffer>>,
}

/// Values per block of the fused update: 16 KiB of each buffer, so a checked block is still in
/// the L1 cache when it is updated.
const BLOCK: usize = 4096;

vectorised! {
    /// The fused update of `p`, `m` and `v` with gradient `g` (`k`: decay, 1 − β1, 1 − β2, the
    /// bias-corrected step size, √(1 − β2^t) and eps), block by block; with `check`, it stops
    /// (`false`) at the first block of `g` holding a NaN or an infinity.
    fn update_values(
        p: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        k: [f32; 6],
        check: bool,
    ) -> bool {
        let [decay, w1, w2, step_size, bias2_sqrt, eps] = k;
        let blocks = p.chunks_mut(BLOCK).zip(m.chunks_mut(BLOCK)).zip(v.chunks_mut(BLOCK));
        for (((p, m), v), g) in blocks.zip(g.chunks(BLOCK)) {
            if check && !all_finite(g) {
                return false;
            }
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                // torch.optim.AdamW's order: decay, moments (lerp), bias-corrected step.
                *p *= decay;
                *m += w1 * (g - *m);
                *v += w2 * (g * g - *v);
                *p -= step_size * *m / (v.sqrt() / bias2_sqrt + eps);
            }
        }
        true
    }
}

/// The saved state of an `AdamW`: flat CPU tensors by name, and the step count.
#[derive(Debug)]
pub struct AdamWState {
    pub tensors: Vec<(String, Tensor)>,
    pub steps: u64,
}

const STATE_NAMES: [&str; 3] = ["params", "exp_avg", "exp_avg_sq"];

impl AdamW {
    /// Moves `vars` into one flat buffer (their values unchanged) and makes each a view of it.
    pub fn new(vars: &[Tensor], config: AdamWConfig) -> Self {
        let _guard = tch::no_grad_guard();
        let device = vars.first().map_or(Device::Cpu, |v| v.device());
        let params = Tensor::cat(&vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        for (v, view) in vars.iter().zip(crate::dist::views(&params, vars)) {
            v.shallow_clone().set_data(&view);
        }
        let zeros = || Tensor::zeros_like(&params);
        debug_assert_eq!(params.device(), device);
        AdamW {
            config,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            step_count: None,
            params,
            steps: 0,
            shard: None,
        }
    }

    /// As [`AdamW::new`], with the parameters and moments in `node`'s host region, shared by the
    /// host's ranks, each of which updates its [`NodeBuffer::segment`]. Collective over the host;
    /// every rank must hold the same `vars` values (rank 0's, broadcast), and CPU tensors.
    pub fn sharded(vars: &[Tensor], config: AdamWConfig, node: Rc<NodeBuffer>) -> Self {
        let _guard = tch::no_grad_guard();
        let n: usize = vars.iter().map(|v| v.numel()).sum();
        let (base, len) = node.host_region();
        assert!(len >= 3 * n, "a host region of {len} f32 for 3 × {n}");
        assert!(vars.iter().all(|v| v.device() == Device::Cpu), "shared state is on the CPU");
        // SAFETY: three disjoint runs of `n` f32 in the host region, which is never freed.
        let blob = |k: usize| unsafe {
            Tensor::from_blob(base.add(k * n).cast(), &[n as i64], &[1], Kind::Float, Device::Cpu)
        };
        let (params, exp_avg, exp_avg_sq) = (blob(0), blob(1), blob(2));
        // Each rank writes its own segment of the (equal) starting values; the moments are zero.
        let seg = node.segment();
        let values = Tensor::cat(&vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        narrow(&params, &seg).copy_(&narrow(&values, &seg));
        node.sync();
        for (v, view) in vars.iter().zip(crate::dist::views(&params, vars)) {
            v.shallow_clone().set_data(&view);
        }
        AdamW { config, params, exp_avg, exp_avg_sq, step_count: None, steps: 0, shard: Some(node) }
    }

    /// Whether the host's ranks share this optimiser's state, each updating a segment.
    pub fn is_sharded(&self) -> bool {
        self.shard.is_some()
    }

    /// The elements this rank updates.
    fn segment(&self) -> Range<usize> {
        self.shard.as_ref().map_or(0..self.params.numel(), |node| node.segment())
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The buffer every parameter is a view of.
    pub fn params(&self) -> &Tensor {
        &self.params
    }

    /// One update from `grad`, a flat gradient laid out like the parameter buffer. Sharded, only
    /// this rank's segment of `grad` is read (it must hold the summed gradient there), and the
    /// call ends with a barrier of the host's ranks, after which every rank sees the whole
    /// update.
    pub fn step(&mut self, grad: &Tensor) {
        let updated = self.update(grad, false);
        debug_assert!(updated);
    }

    /// As [`AdamW::step`], where nothing has yet read `grad` for NaNs and infinities: whether it
    /// had none. On the CPU the check is fused into the update, block by block, each block
    /// checked before it is updated, so a non-finite gradient costs no pass of its own over a
    /// buffer larger than the caches. A non-finite value stops the update at its block: no
    /// non-finite value reaches the parameters or moments, but the blocks before it have been
    /// updated, so after `false` the caller stops training (as `Trainer` does) rather than go
    /// on from a half-made update. Not sharded (a sharded update's gradient was checked as it
    /// was summed).
    pub(crate) fn step_if_finite(&mut self, grad: &Tensor) -> bool {
        assert!(self.shard.is_none(), "a sharded gradient is checked where it is summed");
        self.update(grad, true)
    }

    fn update(&mut self, grad: &Tensor, check: bool) -> bool {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let updated = if self.params.device() == Device::Cpu && grad.is_contiguous() {
            self.step_fused(grad, check)
        } else {
            assert!(self.shard.is_none(), "a sharded update runs on the CPU");
            self.step_aten(grad, check)
        };
        if let Some(node) = &self.shard {
            node.sync();
        }
        updated
    }

    /// The update as one pass over the four buffers (each element read and written once),
    /// where libtorch's ops would make nine passes over buffers larger than the caches; with
    /// `check`, each block of the gradient is first checked for NaNs and infinities while it
    /// sits in the L1 cache, and the update stops at the first block holding one (`false`).
    fn step_fused(&mut self, grad: &Tensor, check: bool) -> bool {
        let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = self.config;
        let bias1 = 1.0 - beta1.powi(self.steps as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.steps as i32)).sqrt();
        let (decay, w1, w2) =
            ((1.0 - lr * weight_decay) as f32, (1.0 - beta1) as f32, (1.0 - beta2) as f32);
        let (step_size, bias2_sqrt, eps) = ((lr / bias1) as f32, bias2_sqrt as f32, eps as f32);
        assert_eq!(grad.numel(), self.params.numel(), "one gradient per parameter");
        assert_eq!(grad.kind(), Kind::Float, "an f32 gradient");
        let seg = self.segment();
        // SAFETY: the same range of four distinct contiguous f32 CPU buffers (`grad` is the
        // gradient buffer, not one of the optimiser's), alive for the whole loop, which nothing
        // else touches while it runs: sharded, the host's other ranks update other segments.
        let (p, m, v, g) = unsafe {
            (
                elements(&mut self.params, &seg),
                elements(&mut self.exp_avg, &seg),
                elements(&mut self.exp_avg_sq, &seg),
                &crate::slices::values(grad)[seg],
            )
        };
        update_values(p, m, v, g, [decay, w1, w2, step_size, bias2_sqrt, eps], check)
    }

    /// The update as libtorch's fused AdamW kernel (any device; on a GPU one pass over the four
    /// flat buffers). With `check`, the verdict on `grad` is made ON THE DEVICE (a sum is
    /// non-finite when any value is) and the kernel skips the update when it is bad, so the
    /// host does not wait for the check before queueing the update; it reads the verdict after,
    /// a wait the step's synchronise that follows makes anyway. Skipped, nothing changes.
    fn step_aten(&mut self, grad: &Tensor, check: bool) -> bool {
        let device = self.params.device();
        let step = self.step_count.get_or_insert_with(|| Tensor::zeros([], (Kind::Float, device)));
        let _ = step.fill_(self.steps as f64);
        let found_inf =
            check.then(|| grad.sum(Kind::Float).isfinite().logical_not().to_kind(Kind::Float));
        let grad = grad.contiguous();
        let buffers = [&self.params, &grad, &self.exp_avg, &self.exp_avg_sq];
        aten::fused_adamw(buffers, step, found_inf.as_ref(), &self.config);
        found_inf.is_none_or(|bad| bad.double_value(&[]) == 0.0)
    }

    /// A copy of the state on the CPU, for a checkpoint.
    pub fn state(&self) -> AdamWState {
        let tensors = [&self.params, &self.exp_avg, &self.exp_avg_sq]
            .into_iter()
            .zip(STATE_NAMES)
            .map(|(t, name)| (name.to_string(), t.to(Device::Cpu).copy()))
            .collect();
        AdamWState { tensors, steps: self.steps }
    }

    /// Restores a checkpointed state; fails (changing nothing) when it does not fit this model.
    pub fn load_state(&mut self, state: &AdamWState) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        let numel = self.params.numel();
        let mut found = Vec::new();
        for name in STATE_NAMES {
            let t = state
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("no tensor named {name}"))?;
            if t.kind() != Kind::Float || t.size() != [numel as i64] {
                return Err(format!(
                    "{name} is {:?} {:?}, the model needs Float [{numel}]",
                    t.kind(),
                    t.size()
                ));
            }
            found.push(t);
        }
        // Sharded, each rank writes its own segment of the (equal) state, between barriers: no
        // rank may still be reading the old values, and every rank sees all the new ones after.
        let sync = || self.shard.as_ref().inspect(|node| node.sync());
        sync();
        let seg = self.segment();
        for (dst, src) in [&self.params, &self.exp_avg, &self.exp_avg_sq].into_iter().zip(found) {
            narrow(dst, &seg).copy_(&narrow(src, &seg));
        }
        sync();
        self.steps = state.steps;
        Ok(())
    }
}

/// Elements `range` of the flat tensor `t`.
fn narrow(t: &Tensor, range: &Range<usize>) -> Tensor {
    t.narrow(0, range.start as i64, range.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    /// The same update as libtorch's own AdamW (tch's `nn::AdamW`), to float rounding.
    #[test]
    fn matches_libtorch_adamw() {
        use tch::nn::OptimizerConfig;
        let make = || {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "l", 5, 3, Default::default());
            (vs, lin)
        };
        let (vs_a, lin_a) = make();
        // The same starting values (tests share torch's RNG, so a second seeded init may differ).
        let (mut vs_b, lin_b) = make();
        vs_b.copy(&vs_a).unwrap();
        let vars_a = vs_a.trainable_variables();
        let initial = lin_a.ws.copy();
        let mut ours = AdamW::new(&vars_a, AdamWConfig::workload(1e-2));
        let theirs_cfg =
            nn::AdamW { beta1: 0.9, beta2: 0.999, wd: 0.01, eps: 1e-8, amsgrad: false };
        let mut theirs = theirs_cfg.build(&vs_b, 1e-2).unwrap();
        for k in 0..5 {
            let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, k as f32]).view([1, 5]);
            for v in &vars_a {
                let _ = v.grad().f_zero_();
            }
            theirs.zero_grad();
            tch::nn::Module::forward(&lin_a, &x).square().sum(Kind::Float).backward();
            tch::nn::Module::forward(&lin_b, &x).square().sum(Kind::Float).backward();
            let grad =
                Tensor::cat(&vars_a.iter().map(|v| v.grad().flatten(0, -1)).collect::<Vec<_>>(), 0);
            ours.step(&grad);
            theirs.step();
        }
        let a =
            Tensor::cat(&[lin_a.ws.flatten(0, -1), lin_a.bs.as_ref().unwrap().shallow_clone()], 0);
        let b =
            Tensor::cat(&[lin_b.ws.flatten(0, -1), lin_b.bs.as_ref().unwrap().shallow_clone()], 0);
        assert!(a.allclose(&b, 1e-6, 1e-7, false), "{a:?} vs {b:?}");
        assert!(!lin_a.ws.allclose(&initial, 1e-3, 1e-3, false), "the parameters moved");
        assert_eq!(ours.steps(), 5);
        // The parameters are views of the buffer the optimiser updates.
        let flat = Tensor::cat(&vars_a.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        assert!(ours.params().equal(&flat));
    }

    /// dp-bench's CPU update and libtorch's fused kernel (other devices; here a non-contiguous
    /// gradient) agree.
    #[test]
    fn cpu_and_kernel_updates_agree() {
        let start = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0, 3.0, -0.25]);
        let mut a = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        let mut b = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        for k in 0..4 {
            let wide = Tensor::arange(12, (Kind::Float, Device::Cpu)) * 0.3 - k as f64;
            let grad = wide.slice(0, 0, 12, 2); // every other element: not contiguous
            assert!(!grad.is_contiguous());
            a.step(&grad.contiguous());
            b.step(&grad);
        }
        assert!(b.step_count.is_some() && a.step_count.is_none(), "one update each way");
        assert!(a.params().allclose(b.params(), 1e-6, 1e-7, false));
        assert!(!a.params().allclose(&start, 1e-3, 1e-3, false), "the parameters moved");
    }

    /// A checked update of a finite gradient is the unchecked one, bit for bit; a NaN or an
    /// infinity stops it at its block, with nothing non-finite written anywhere and the blocks
    /// from the bad one on untouched.
    #[test]
    fn checked_update_stops_at_the_first_non_finite_block() {
        let n = 3 * BLOCK + 100;
        let start = Tensor::arange(n as i64, (Kind::Float, Device::Cpu)) * 1e-4 - 0.1;
        let grad = (Tensor::arange(n as i64, (Kind::Float, Device::Cpu)) * 0.37).sin();
        let (mut plain, mut checked) = (
            AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2)),
            AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2)),
        );
        for _ in 0..3 {
            plain.step(&grad);
            assert!(checked.step_if_finite(&grad));
        }
        assert!(
            plain.params().equal(checked.params()) && plain.exp_avg_sq.equal(&checked.exp_avg_sq)
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, BLOCK + 7, 3 * BLOCK + 99] {
                let mut opt = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
                let poisoned = grad.copy();
                let _ = poisoned.narrow(0, at as i64, 1).fill_(bad as f64);
                assert!(!opt.step_if_finite(&poisoned), "{bad} at {at} went unnoticed");
                let first_bad = at / BLOCK * BLOCK;
                for t in [opt.params(), &opt.exp_avg, &opt.exp_avg_sq] {
                    assert!(bool::try_from(t.isfinite().all()).unwrap(), "{bad} at {at} got in");
                }
                let rest = |t: &Tensor| t.narrow(0, first_bad as i64, (n - first_bad) as i64);
                assert!(rest(opt.params()).equal(&rest(&start)), "{bad} at {at}: updated past it");
                if first_bad > 0 {
                    let done = |t: &Tensor| t.narrow(0, 0, first_bad as i64);
                    assert!(!done(opt.params()).equal(&done(&start)), "blocks before it updated");
                }
            }
        }
    }

    /// libtorch's fused kernel (the update on GPUs), checked: a finite gradient gives the CPU
    /// update's result; a NaN or an infinity anywhere leaves the parameters and both moments
    /// exactly as they were, the verdict made on the buffers' device.
    #[test]
    fn fused_kernel_skips_a_non_finite_gradient_entirely() {
        let n = 1000;
        let start = Tensor::arange(n, (Kind::Float, Device::Cpu)) * 1e-3 - 0.5;
        let grad = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37).sin();
        let mut ours = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        let mut kernel = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        for _ in 0..3 {
            ours.steps += 1;
            assert!(ours.step_fused(&grad, true));
            kernel.steps += 1;
            assert!(kernel.step_aten(&grad, true));
        }
        for (a, b) in [(ours.params(), kernel.params()), (&ours.exp_avg, &kernel.exp_avg)] {
            assert!(a.allclose(b, 1e-6, 1e-7, false), "{a:?} vs {b:?}");
        }
        assert!(ours.exp_avg_sq.allclose(&kernel.exp_avg_sq, 1e-6, 1e-9, false));
        let before = [kernel.params(), &kernel.exp_avg, &kernel.exp_avg_sq].map(|t| t.copy());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let poisoned = grad.copy();
            let _ = poisoned.narrow(0, n - 1, 1).fill_(bad as f64);
            kernel.steps += 1;
            assert!(!kernel.step_aten(&poisoned, true), "{bad} went unnoticed");
            let after = [kernel.params(), &kernel.exp_avg, &kernel.exp_avg_sq];
            for (b, a) in before.iter().zip(after) {
                assert!(b.equal(a), "{bad}: the state changed");
            }
        }
        // Through `step_if_finite`, off the CPU's own path (a non-contiguous gradient).
        let mut opt = AdamW::new(
            &[Tensor::zeros([3], (Kind::Float, Device::Cpu))],
            AdamWConfig::workload(1e-2),
        );
        let wide = Tensor::from_slice(&[1.0f32, 0.0, f32::NAN, 0.0, 2.0, 0.0]);
        assert!(!opt.step_if_finite(&wide.slice(0, 0, 6, 2)));
        assert!(opt.step_count.is_some(), "the kernel's path");
        assert!(opt.params().equal(&Tensor::zeros([3], (Kind::Float, Device::Cpu))));
    }

    #[test]
    fn state_round_trips_and_rejects_another_model() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "l", 2, 2, Default::default());
        let mut opt = AdamW::new(&vs.trainable_variables(), AdamWConfig::workload(0.1));
        opt.step(&Tensor::ones([6], (Kind::Float, Device::Cpu)));
        let saved = opt.state();
        let before = opt.params().copy();
        opt.step(&Tensor::ones([6], (Kind::Float, Device::Cpu)));
        assert!(!opt.params().equal(&before));
        opt.load_state(&saved).unwrap();
        assert!(opt.params().equal(&before));
        assert_eq!(opt.steps(), 1);

        let vs2 = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs2.root() / "l", 3, 2, Default::default());
        let mut other = AdamW::new(&vs2.trainable_variables(), AdamWConfig::workload(0.1));
        assert!(other.load_state(&saved).unwrap_err().contains("params"));
    }
}
